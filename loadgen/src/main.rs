//! The `loadgen` command; everything lives in the library.

fn main() {
    if let Err(e) = loadgen::cli::main() {
        eprintln!("loadgen: {e:#}");
        std::process::exit(1);
    }
}
