//! How a command ends in failure, shared by `cli`, `sandbox` and `bench` (which `cli`
//! starts, so they cannot import `cli`).

use std::process::ExitCode;

/// One line on stderr and the exit code.
pub fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("lifeboat: {message}");
    ExitCode::from(code)
}
