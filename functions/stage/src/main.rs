//! Entry point of the stage function.

fn main() -> std::process::ExitCode {
    conveyor_service::start(conveyor_stage::STEP, conveyor_stage::ports)
}
