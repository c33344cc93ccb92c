//! Entry point of the load function.

fn main() -> std::process::ExitCode {
    conveyor_service::start(conveyor_load::STEP, conveyor_load::ports)
}
