//! The `offgrid` command: parses arguments, calls the library, prints results and maps
//! errors to the exit codes of SPEC.md §8. No product logic lives here.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Carry software and LLM models to places the internet does not reach.
#[derive(Parser)]
#[command(name = "offgrid", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: cli::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a minisign-format signing key pair
    Keygen(cli::keygen::Args),
    /// Write a runnable, signed USB tree of a release
    PackUsb(cli::pack_usb::Args),
    /// Verify a USB tree or an update pack against trusted keys
    Verify(cli::verify::Args),
    /// Copy a verified tree to several sticks at once and read each one back
    Clone(cli::clone::Args),
    /// Write one signed file taking a site from an older release to a new one
    CreateUpdatePack(cli::create_update_pack::Args),
    /// Install a verified USB tree into this site's home
    Install(cli::install::Args),
    /// Verify and apply an update pack atomically
    ApplyUpdate(cli::apply_update::Args),
    /// Show the installed release, its history and any recovery
    Status(cli::status::Args),
    /// List the offgrid peers on the LAN (mDNS) and what they serve
    Peers(cli::peers::Args),
    /// Pull the newest release of the installed bundle from peers on the LAN and install it
    Sync(cli::sync::Args),
    /// Return to the previous installed release
    Rollback(cli::rollback::Args),
    /// Put back damaged or missing installed files from a stick, an update pack or a folder
    Repair(cli::repair::Args),
    /// Remove kept releases beyond the newest --keep N, freeing the bytes only they use
    Gc(cli::gc::Args),
    /// Run a GGUF model with llama.cpp and chat with it
    Run(cli::run::Args),
    /// List the models on the stick or in the home, and whether they fit this machine
    Models(cli::models::Args),
    /// Serve the trees and update packs this machine holds over read-only HTTP
    Serve(cli::serve::Args),
    /// Write a BitTorrent metainfo (.torrent) for a USB tree or an update pack
    Torrent(cli::torrent::Args),
    /// Download into the HQ store from a catalog, a URL or hf://, verified and resumable
    Fetch(cli::fetch::Args),
    /// List catalog entries newer than the ones the latest recorded releases use
    CheckUpdates(cli::fetch::CheckArgs),
    /// Trust roots: HQ rotates and revokes its signing keys; sites apply the chain
    Trust(cli::trust::Args),
    /// Print this site's public key (for HQ to enrol)
    SiteKey(cli::site::SiteKeyArgs),
    /// Write this site's signed receipt onto a stick or folder
    Receipt(cli::site::ReceiptArgs),
    /// HQ: import site receipts, enrol site keys
    Receipts(cli::site::ReceiptsArgs),
    /// HQ: show the sites, their releases, failures and damage
    Fleet(cli::site::FleetArgs),
    /// Show what a stick or an update pack holds, without verifying anything
    Inspect(cli::inspect::Args),
    /// Print a shell completion script (bash, zsh, fish, powershell)
    Completions(cli::shell::CompletionsArgs),
    /// Print the manual page (roff) covering every command
    Manpage(cli::shell::ManpageArgs),
}

fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return cli::usage_error(e, &Cli::command()),
    };
    let inv = cli::Invocation::of(&matches);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return cli::usage_error(e, &Cli::command()),
    };
    let g = cli.global.resolve();
    let result = match cli.command {
        Command::Keygen(a) => cli::keygen::run(a, &g),
        Command::PackUsb(a) => cli::pack_usb::run(a, &g),
        Command::Verify(a) => cli::verify::run(a, &g),
        Command::Clone(a) => cli::clone::run(a, &g),
        Command::CreateUpdatePack(a) => cli::create_update_pack::run(a, &g),
        Command::Install(a) => cli::install::run(a, &g),
        Command::ApplyUpdate(a) => cli::apply_update::run(a, &g),
        Command::Status(a) => cli::status::run(a, &g),
        Command::Peers(a) => cli::peers::run(a, &g),
        Command::Sync(a) => cli::sync::run(a, &g),
        Command::Rollback(a) => cli::rollback::run(a, &g),
        Command::Repair(a) => cli::repair::run(a, &g),
        Command::Gc(a) => cli::gc::run(a, &g),
        Command::Run(a) => cli::run::run(a, &g),
        Command::Models(a) => cli::models::run(a, &g),
        Command::Serve(a) => cli::serve::run(a, &g),
        Command::Torrent(a) => cli::torrent::run(a, &g),
        Command::Fetch(a) => cli::fetch::run(a, &g),
        Command::CheckUpdates(a) => cli::fetch::check_updates(a, &g),
        Command::Trust(a) => cli::trust::run(a, &g),
        Command::SiteKey(a) => cli::site::site_key(a, &g),
        Command::Receipt(a) => cli::site::receipt(a, &g),
        Command::Receipts(a) => cli::site::receipts(a, &g),
        Command::Fleet(a) => cli::site::fleet(a, &g),
        Command::Inspect(a) => cli::inspect::run(a, &g),
        Command::Completions(a) => cli::shell::completions(a, Cli::command()),
        Command::Manpage(a) => cli::shell::manpage(a, Cli::command()),
    };
    cli::finish(result, &g, &inv)
}
