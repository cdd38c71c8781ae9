//! `offgrid completions SHELL` and `offgrid manpage`: shell completion scripts
//! (clap_complete) and one roff manual page covering every command and its flags
//! (clap_mangen), both generated from the clap definitions in `main.rs`, so they cannot
//! drift from the real flags. `install.sh` on a stick installs both (SPEC.md §15.3).

use std::process::ExitCode;

use anyhow::Context;

/// The shells `offgrid completions` writes a script for.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Powershell,
}

/// Arguments of `offgrid completions`.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to write the completion script for
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Arguments of `offgrid manpage`.
#[derive(clap::Args, Debug)]
pub struct ManpageArgs {}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(args: CompletionsArgs, mut cmd: clap::Command) -> anyhow::Result<ExitCode> {
    use clap_complete::Shell as S;
    let shell = match args.shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
        Shell::Powershell => S::PowerShell,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "offgrid", &mut buf);
    super::out(&String::from_utf8_lossy(&buf))?;
    Ok(ExitCode::SUCCESS)
}

/// Prints `offgrid(1)` as roff on stdout: the top command's name, synopsis, description
/// and global options, the list of commands, then one section per command (`OFFGRID
/// PACK-USB` …) with its synopsis, description and every flag.
pub fn manpage(_args: ManpageArgs, mut cmd: clap::Command) -> anyhow::Result<ExitCode> {
    cmd.build();
    let roff = render(&cmd).context("rendering the manual page")?;
    super::out(&roff)?;
    Ok(ExitCode::SUCCESS)
}

fn render(cmd: &clap::Command) -> std::io::Result<String> {
    let top = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    top.render_title(&mut out)?;
    top.render_name_section(&mut out)?;
    top.render_synopsis_section(&mut out)?;
    top.render_description_section(&mut out)?;
    top.render_options_section(&mut out)?;
    top.render_subcommands_section(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let mut buf = Vec::new();
        let man = clap_mangen::Man::new(sub.clone());
        man.render_synopsis_section(&mut buf)?;
        man.render_description_section(&mut buf)?;
        man.render_options_section(&mut buf)?;
        out.extend_from_slice(
            format!(".SH \"OFFGRID {}\"\n", sub.get_name().to_ascii_uppercase()).as_bytes(),
        );
        // The command's own sections become subsections of its section.
        for line in String::from_utf8_lossy(&buf).split_inclusive('\n') {
            match line.strip_prefix(".SH ") {
                Some(rest) => out.extend_from_slice(format!(".SS {rest}").as_bytes()),
                None => out.extend_from_slice(line.as_bytes()),
            }
        }
    }
    top.render_version_section(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
