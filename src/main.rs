use clap::FromArgMatches;

use certpin::cli::{self, Cli, Command, UsageError};

fn main() {
    let argv0 = std::env::args_os().next();
    let matches = cli::command(argv0.as_deref()).get_matches();
    let parsed = Cli::from_arg_matches(&matches).map_err(|e| e.exit());
    let Ok(mut cli) = parsed;
    if let (Command::Settings(args), Some(("settings", sub))) =
        (&mut cli.command, matches.subcommand())
    {
        match cli::settings::Groups::from_matches(sub) {
            Ok(g) => args.groups = g,
            Err(UsageError(msg)) => {
                eprintln!("certpin: {msg}");
                std::process::exit(2);
            }
        }
    }
    std::process::exit(cli::run(cli.command));
}
