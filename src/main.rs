//! The `drehkreuz` command.

fn main() -> std::process::ExitCode {
    drehkreuz::cli::main()
}
