//! Entry point of the submit function.

fn main() -> std::process::ExitCode {
    conveyor_service::start(conveyor_submit::STEP, conveyor_submit::ports)
}
