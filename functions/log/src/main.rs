//! Entry point of the log function.

fn main() -> std::process::ExitCode {
    conveyor_service::start(conveyor_log::STEP, conveyor_log::ports)
}
