use clap::Parser;

fn main() {
    let cli = skywave::cli::Cli::parse();
    let json = cli.json;
    if let Err(e) = skywave::cli::main(cli) {
        skywave::cli::report_error(&e, json);
        std::process::exit(1);
    }
}
