//! Entry point of the console service.

fn main() -> std::process::ExitCode {
    conveyor_service::start_with("conveyor-console", conveyor_console_service::run())
}
