//! Shared CLI plumbing: global flags, colour, progress bars, error printing and the
//! mapping of errors to exit codes. One file per command beside this one.

pub mod apply_update;
pub mod args;
pub mod clone;
pub mod create_update_pack;
pub mod fetch;
pub mod gc;
pub mod inspect;
pub mod install;
pub mod keygen;
pub mod models;
pub mod pack_usb;
pub mod peers;
pub mod repair;
pub mod rollback;
pub mod run;
pub mod serve;
pub mod shell;
pub mod site;
pub mod status;
pub mod sync;
pub mod torrent;
pub mod trust;
pub mod trust_args;
pub mod verify;

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// When to colour diagnostics.
#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Flags every command takes.
#[derive(clap::Args, Debug)]
pub struct Global {
    /// Colour diagnostics: auto (a terminal, and NO_COLOR unset), always, never
    #[arg(long, global = true, value_enum, default_value = "auto")]
    color: ColorChoice,
}

/// The global flags, resolved against the environment.
pub struct Ctx {
    /// Colour stderr diagnostics.
    pub color: bool,
    /// Draw progress bars (stderr is a terminal and not CI).
    pub progress: bool,
}

impl Global {
    pub fn resolve(&self) -> Ctx {
        let tty = io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && !no_color,
        };
        Ctx {
            color,
            progress: tty && std::env::var_os("CI").is_none(),
        }
    }
}

impl Ctx {
    /// A byte-count progress bar on stderr, hidden when stderr is not a terminal or when
    /// `quiet` (JSON mode).
    pub fn bar(&self, message: &str, quiet: bool) -> ProgressBar {
        if !self.progress || quiet {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb.set_message(message.to_owned());
        pb
    }

    /// Prints a diagnostic line to stderr.
    pub fn note(&self, msg: &str) {
        let _ = writeln!(io::stderr(), "{msg}");
    }

    /// Prints "warning: …" to stderr.
    pub fn warn(&self, msg: &str) {
        let label = if self.color {
            "\x1b[33mwarning\x1b[0m"
        } else {
            "warning"
        };
        let _ = writeln!(io::stderr(), "{label}: {msg}");
    }
}

/// The one password reader for an encrypted secret key: `OFFGRID_PASSWORD`, else a prompt
/// on the terminal (never echoed); no terminal and no variable is an error.
pub fn password_for(path: &std::path::Path) -> Result<String, String> {
    let pw = if let Ok(p) = std::env::var("OFFGRID_PASSWORD") {
        p
    } else if !io::stdin().is_terminal() {
        return Err("no terminal to ask on; set OFFGRID_PASSWORD".into());
    } else {
        rpassword::prompt_password(format!("password for '{}': ", path.display()))
            .map_err(|e| e.to_string())?
    };
    decrypting_note(path);
    Ok(pw)
}

/// Warns about each platform binary that carries debug info: it goes onto every stick
/// as it is (a build with debug info is about ten times the stripped `cargo xtask dist`
/// binary). Unreadable or non-ELF files pass silently; packing reports them.
pub fn warn_debug_binaries(ctx: &Ctx, inputs: &offgrid::usb::ReleaseInputs) {
    for (platform, path) in &inputs.binaries {
        if let Ok(Some(n)) = offgrid::usb::binary::debug_info_bytes(path) {
            if n > 0 {
                ctx.warn(&format!(
                    "the offgrid for {platform} ('{}') carries {} of debug info, which goes onto every stick\nhelp: build the stick binary with `cargo xtask dist` and pass it with --binary {platform}=target/dist/ship/offgrid (or run that binary)",
                    path.display(),
                    offgrid::usb::templates::human_size(n)
                ));
            }
        }
    }
}

/// Warns about each model whose GGUF carries no chat template llama.cpp recognises
/// (`offgrid run` then falls back to ChatML, which may not be what the model was trained
/// on). A heuristic: see `offgrid::models::template`. Unreadable headers pass silently
/// here; planning reports them.
pub fn warn_chat_templates(ctx: &Ctx, inputs: &offgrid::usb::ReleaseInputs) {
    for m in &inputs.models {
        let Ok(info) = offgrid::gguf::read_info(&m.source) else {
            continue;
        };
        let problem = match info.chat_template.as_deref() {
            None => "carries no chat template (tokenizer.chat_template)".to_owned(),
            Some(t) => {
                let s = offgrid::models::template::TemplateSummary::of(t);
                if s.family.is_some() {
                    continue;
                }
                format!(
                    "has a chat template llama.cpp does not recognise (\"{}\")",
                    s.first_line
                )
            }
        };
        ctx.warn(&format!(
            "model '{}' ('{}') {problem}: `offgrid run` will use ChatML for it\nhelp: pack a GGUF whose tokenizer.chat_template is one llama.cpp knows (ChatML, Llama 3, Mistral, Gemma, Phi, ...), e.g. the upstream conversion",
            m.name,
            m.source.display()
        ));
    }
}

/// Says on stderr that a key is being decrypted (scrypt takes a second or more and about
/// 1 GiB of memory), once the password is known.
pub fn decrypting_note(path: &std::path::Path) {
    let _ = writeln!(
        io::stderr(),
        "decrypting key '{}' (scrypt, a few seconds)...",
        path.display()
    );
}

/// Turns a bar into the library's progress callback.
pub fn progress_fn(pb: &ProgressBar) -> impl Fn(u64, u64) + Sync + '_ {
    move |done, total| {
        if pb.length() != Some(total) {
            pb.set_length(total);
        }
        pb.set_position(done);
    }
}

/// Writes to stdout; a closed pipe (`offgrid … | head`) is not an error.
pub fn out(s: &str) -> io::Result<()> {
    let mut o = io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|_| o.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// The schema every JSON record carries when its command sets none of its own (SPEC.md §9).
pub const JSON_SCHEMA: u32 = 1;

/// Prints a JSON Lines record `{"type": ty, "data": data}` (SPEC.md §9). Every record's
/// `data` carries `schema`: the command's own when it set one, else [`JSON_SCHEMA`].
pub fn json_line(ty: &str, mut data: serde_json::Value) -> io::Result<()> {
    if let Some(o) = data.as_object_mut() {
        o.entry("schema").or_insert_with(|| JSON_SCHEMA.into());
    }
    let line = serde_json::json!({ "type": ty, "data": data });
    out(&format!("{line}\n"))
}

/// What the command line asked for, as far as the error path needs it: the command's
/// name (`verify`, `receipts import`) and whether it was given `--json`.
#[derive(Debug, Default)]
pub struct Invocation {
    /// The subcommand path, words joined by a space; empty when none was recognised.
    pub command: String,
    /// `--json` was given: a failure also prints an `error` record on stdout (SPEC.md §9.3).
    pub json: bool,
}

impl Invocation {
    /// The command and `--json` of parsed arguments (every command's flag has the id `json`).
    pub fn of(m: &clap::ArgMatches) -> Self {
        let mut words = Vec::new();
        let mut json = false;
        let mut m = m;
        loop {
            json |= matches!(m.try_get_one::<bool>("json"), Ok(Some(true)));
            let Some((name, sub)) = m.subcommand() else {
                break;
            };
            words.push(name);
            m = sub;
        }
        Invocation {
            command: words.join(" "),
            json,
        }
    }

    /// The same, guessed from raw arguments clap refused: every word naming a subcommand
    /// of the one before, and `--json` anywhere before a `--`.
    pub fn guess(cmd: &clap::Command, args: &[std::ffi::OsString]) -> Self {
        let mut words = Vec::new();
        let mut json = false;
        let mut cur = cmd;
        for a in args.iter().skip(1).filter_map(|a| a.to_str()) {
            if a == "--" {
                break;
            }
            if a == "--json" {
                json = true;
            } else if !a.starts_with('-') {
                if let Some(sub) = cur.find_subcommand(a) {
                    words.push(sub.get_name().to_owned());
                    cur = sub;
                }
            }
        }
        Invocation {
            command: words.join(" "),
            json,
        }
    }
}

/// An error of the CLI itself (flags that do not fit together, an input that is not
/// there) with its fix: the CLI's counterpart of the library's `Diagnostic::help`, so
/// no `help:` line is glued into its message either. Exit code 2.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub help: String,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// A [`CliError`] as an `anyhow` error: `return Err(fail(message, help))`.
pub fn fail(message: impl Into<String>, help: impl Into<String>) -> anyhow::Error {
    CliError {
        message: message.into(),
        help: help.into(),
    }
    .into()
}

/// A failure as it is shown: the top message, each cause, the `help:` lines, the exit code.
struct Failure {
    message: String,
    causes: Vec<String>,
    help: Vec<String>,
    exit_code: u8,
}

impl Failure {
    /// Walks the chain once: each link's text without its inline `help:` lines (some of the
    /// CLI's own messages still carry theirs; library errors answer [`offgrid::exit::help`],
    /// a [`CliError`] its `help`), a
    /// cause whose text is already shown dropped, help lines deduplicated and kept last.
    fn of(err: &anyhow::Error) -> Self {
        let mut help: Vec<String> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        for cause in err.chain() {
            let own = cause.downcast_ref::<CliError>().map(|c| c.help.clone());
            if let Some(h) = offgrid::exit::help(cause).or(own) {
                if !help.contains(&h) {
                    help.push(h);
                }
            }
            let s = cause.to_string();
            let mut lines = Vec::new();
            for l in s.lines() {
                match l.strip_prefix("help: ") {
                    Some(h) if !help.iter().any(|x| x == h) => help.push(h.to_owned()),
                    Some(_) => {}
                    None => lines.push(l),
                }
            }
            let s = lines.join("\n");
            if s.is_empty() || texts.iter().any(|t| t.contains(&s)) {
                continue;
            }
            texts.push(s);
        }
        let refusal = err.chain().any(offgrid::exit::is_refusal);
        let mut texts = texts.into_iter();
        Failure {
            message: texts.next().unwrap_or_default(),
            causes: texts.collect(),
            help,
            exit_code: if refusal {
                offgrid::exit::REFUSED
            } else {
                offgrid::exit::ERROR
            },
        }
    }

    /// `error: MESSAGE`, `  caused by: …` lines, then `help: …` lines, on stderr.
    fn print(&self, ctx: &Ctx) {
        let label = if ctx.color {
            "\x1b[31merror\x1b[0m"
        } else {
            "error"
        };
        let mut msg = format!("{label}: {}\n", self.message);
        for c in &self.causes {
            msg.push_str(&format!("  caused by: {c}\n"));
        }
        for h in &self.help {
            msg.push_str(&format!("help: {h}\n"));
        }
        let _ = io::stderr().write_all(msg.as_bytes());
    }

    /// The `error` record (SPEC.md §9.3) on stdout, when the command was given `--json`.
    fn record(&self, inv: &Invocation) {
        if !inv.json {
            return;
        }
        let _ = json_line(
            "error",
            serde_json::json!({
                "schema": JSON_SCHEMA,
                "command": (!inv.command.is_empty()).then_some(&inv.command),
                "exit_code": self.exit_code,
                "message": self.message,
                "causes": self.causes,
                "help": self.help,
            }),
        );
    }
}

/// Maps a command's result to the process exit code, printing the error chain once (and,
/// with `--json`, the `error` record that ends the command's output, SPEC.md §9.3).
pub fn finish(result: anyhow::Result<ExitCode>, ctx: &Ctx, inv: &Invocation) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            if err.chain().any(|e| {
                e.downcast_ref::<io::Error>().map(|e| e.kind()) == Some(io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            let f = Failure::of(&err);
            f.print(ctx);
            f.record(inv);
            ExitCode::from(f.exit_code)
        }
    }
}

/// Arguments clap refused (or `--help`/`--version`, which it prints and exits 0 on):
/// clap's own message on stderr, exit 2, and with `--json` among the arguments an `error`
/// record whose `message` is clap's first line and whose `help` holds its tips.
pub fn usage_error(e: clap::Error, cmd: &clap::Command) -> ExitCode {
    if !e.use_stderr() {
        e.exit();
    }
    let _ = e.print();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let inv = Invocation::guess(cmd, &args);
    let rendered = e.render().to_string();
    let mut lines = rendered.lines().map(str::trim);
    let message = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    let mut help: Vec<String> = lines
        .filter_map(|l| l.strip_prefix("tip: "))
        .map(str::to_owned)
        .collect();
    help.push(format!(
        "see 'offgrid {}--help'",
        if inv.command.is_empty() {
            String::new()
        } else {
            format!("{} ", inv.command)
        }
    ));
    let code = u8::try_from(e.exit_code()).unwrap_or(offgrid::exit::ERROR);
    Failure {
        message,
        causes: Vec::new(),
        help,
        exit_code: code,
    }
    .record(&inv);
    ExitCode::from(code)
}
