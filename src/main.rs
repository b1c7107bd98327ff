//! The binary: everything, argument parsing included, is in the library.

fn main() -> std::process::ExitCode {
    rollgate::main()
}
