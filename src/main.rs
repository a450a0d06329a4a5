//! The `retail-kpi` binary: parses the command line and maps errors to exit codes; all the
//! work is in the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
