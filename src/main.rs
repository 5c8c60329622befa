use clap::Parser;

fn main() {
    let cli = skywave::cli::Cli::parse();
    if let Err(e) = skywave::cli::main(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
