//! Writing command output to stdout without panicking when the reader has gone away.
//!
//! `println!` panics on a closed pipe (`drehkreuz audit | head`). The command line writes
//! through [`out!`] / [`outln!`] instead: a closed pipe (`EPIPE`) ends the process quietly with
//! exit code 0, as `head` asked for no more; any other write error ends it with exit code 1
//! and one line on stderr.

use std::io::Write;

/// Writes formatted output to stdout (see the module doc for closed pipes).
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        exit_on_write_error(&e);
    }
}

/// Ends the process for a failed stdout write: quietly with 0 on a closed pipe, else 1.
pub fn exit_on_write_error(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to stdout: {e}");
    std::process::exit(1);
}

/// `print!` that does not panic on a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` that does not panic on a closed pipe.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}
