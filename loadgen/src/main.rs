//! The `loadgen` binary: parse, run, print. Exit codes: 0 ok, 1 a --max-p99/--max-loss threshold
//! was crossed, 2 no result (bad options, machine limit, target failure).

use clap::Parser;
use loadgen::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Plot(p)) => match loadgen::plot::load_reports(&p.reports) {
            Ok(panels) => {
                let title = p
                    .title
                    .as_deref()
                    .unwrap_or("delivery latency by percentile");
                match std::fs::write(&p.out, loadgen::plot::render_panels(title, &panels)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(&format!("{}: {e}", p.out.display())),
                }
            }
            Err(e) => fail(&e),
        },
        None => match loadgen::run(&cli.run) {
            Ok(report) => {
                if cli.run.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).expect("report serializes")
                    );
                } else {
                    print!("{}", report.text());
                }
                if report.thresholds.passed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => fail(&e.to_string()),
        },
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("loadgen: error: {msg}");
    ExitCode::from(2)
}
