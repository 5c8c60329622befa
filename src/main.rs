use clap::Parser;

fn main() {
    let cli = match skywave::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => arg_error(e),
    };
    let json = cli.json;
    if let Err(e) = skywave::cli::main(cli) {
        skywave::cli::report_error(&e, json);
        std::process::exit(1);
    }
}

/// A command line clap refused: with `--json` anywhere on it, the error is JSON like
/// every other error (a script reads one format); help and version print as they are.
fn arg_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    let shown = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if shown || !std::env::args_os().any(|a| a == "--json") {
        e.exit()
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("");
    let msg = first.strip_prefix("error: ").unwrap_or(first);
    println!("{}", serde_json::json!({ "error": msg }));
    std::process::exit(e.exit_code())
}
