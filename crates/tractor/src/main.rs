//! The one tractor binary: each subcommand wires a crate of the workspace to the command line.

use clap::{Parser, Subcommand};

/// tractor: trained model in, served, monitored and autoscaled endpoint out.
#[derive(Parser, Debug)]
#[command(name = "tractor", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the ModelDeployment CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> anyhow::Result<()> {
    let Cli { command } = Cli::parse();
    match command {
        Command::Crd => print!("{}", tractor_api::crd_yaml()),
    }
    Ok(())
}
