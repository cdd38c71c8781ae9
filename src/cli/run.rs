//! `offgrid run [MODEL]`: finds the model, verifies it against the signed manifest (or
//! remembers it was), checks that it fits this machine, then chats: one answer to
//! `--prompt`, or an interactive prompt reading stdin line by line. Answers stream to
//! stdout; status, warnings and `--stats` go to stderr. Ctrl-C stops the current answer,
//! a second Ctrl-C (or one at the prompt) exits with code 130.

use std::path::PathBuf;

use super::models::Where;

/// Arguments of `offgrid run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A model name from the manifest (NAME or NAME:QUANT, e.g. smollm2-135m-instruct:Q4_1)
    /// or a path to a .gguf file [default: the manifest's default_model]
    pub model: Option<String>,
    #[command(flatten)]
    pub place: Where,
    /// Answer this one prompt and exit (otherwise: interactive chat on stdin)
    #[arg(short, long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// A system message opening the conversation
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Stop an answer after this many tokens [default: until the model ends its turn]
    #[arg(short = 'n', long, value_name = "N")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature; 0 is greedy decoding (the same answer every run)
    #[arg(long, value_name = "T", default_value_t = 0.8)]
    pub temp: f32,
    /// Seed of the sampler [default: random]
    #[arg(long, value_name = "N")]
    pub seed: Option<u32>,
    /// Threads [default: the physical cores]
    #[arg(short, long, value_name = "N")]
    pub threads: Option<u32>,
    /// Context size in tokens [default: the model's, at most 4096]
    #[arg(short, long, value_name = "TOKENS")]
    pub ctx: Option<u32>,
    /// Print load time, prompt and generation speed to stderr after each answer
    #[arg(long)]
    pub stats: bool,
    /// Show llama.cpp's own log on stderr
    #[arg(short, long)]
    pub verbose: bool,
    /// Do not check the model file against the signed manifest (warns)
    #[arg(long)]
    pub no_verify: bool,
    /// Trust this public key for the manifest's signatures (repeatable)
    #[arg(long, value_name = "FILE")]
    pub pubkey: Vec<PathBuf>,
    /// Trust policy file (keys and threshold)
    #[arg(long, value_name = "FILE", conflicts_with = "pubkey")]
    pub trust: Option<PathBuf>,
}

#[cfg(not(feature = "llama"))]
pub fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<std::process::ExitCode> {
    // A model run could never start is named as such first (SPEC.md §18.4).
    if let Ok(locations) = args.place.locations(ctx) {
        if let Ok(catalog) = offgrid::models::Catalog::open(locations) {
            if let Ok(c) = catalog.resolve(args.model.as_deref()) {
                if let Some(m) = c.first() {
                    m.check_runnable()?;
                }
            }
        }
    }
    anyhow::bail!(
        "this offgrid was built without llama.cpp, so it cannot run models\nhelp: use an offgrid built with the 'llama' feature (the default), e.g. the one on the stick"
    )
}

#[cfg(feature = "llama")]
pub use with_llama::run;

#[cfg(feature = "llama")]
mod with_llama {
    use std::io::{self, BufRead, IsTerminal, Write};
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicBool, Ordering};

    use anyhow::Context;
    use offgrid::keys::PublicKey;
    use offgrid::launcher::{ChatOptions, LoadOptions, Model, Stats, StopReason};
    use offgrid::models::fit::mib;
    use offgrid::models::locate::pinned_policy_for;
    use offgrid::models::{choose, Catalog, FileCheckKind, Machine, SignatureCheck, VerifyCache};
    use offgrid::trust::TrustPolicy;

    use super::super::{progress_fn, Ctx};
    use super::Args;

    /// Raised by the first Ctrl-C during an answer; the generation loop polls it.
    static STOP: AtomicBool = AtomicBool::new(false);
    /// True while an answer is being generated.
    static ANSWERING: AtomicBool = AtomicBool::new(false);
    /// Exit code after Ctrl-C (128 + SIGINT, the shell convention).
    const INTERRUPTED: u8 = 130;

    fn install_ctrl_c() {
        // Failing to install the handler leaves Ctrl-C at its default (exit at once).
        let _ = ctrlc::set_handler(|| {
            if ANSWERING.load(Ordering::SeqCst) && !STOP.swap(true, Ordering::SeqCst) {
                return;
            }
            let _ = writeln!(io::stderr());
            // _exit, not exit: the main thread may be inside llama.cpp, whose static
            // destructors must not run under it. Answer text is flushed piece by piece.
            // SAFETY: _exit only ends the process.
            unsafe { libc::_exit(INTERRUPTED.into()) }
        });
    }

    /// The keys `model` is checked with: `--trust`/`--pubkey`, else the ones pinned in
    /// the home for the bundle whose release holds it (SPEC.md §7.5).
    fn policy(
        args: &Args,
        catalog: &Catalog,
        model: &offgrid::models::ModelFile,
    ) -> anyhow::Result<Option<TrustPolicy>> {
        if let Some(t) = &args.trust {
            return Ok(Some(TrustPolicy::load(t)?));
        }
        if !args.pubkey.is_empty() {
            let keys = args
                .pubkey
                .iter()
                .map(|p| PublicKey::load(p))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Some(TrustPolicy::from_keys(keys)?));
        }
        match catalog.locations.trust_home.as_deref() {
            Some(home) => {
                let tree = model.tree.map(|t| catalog.trees[t].root.clone());
                Ok(
                    pinned_policy_for(home, tree.as_deref().unwrap_or(home)).with_context(
                        || format!("reading the keys pinned at install in '{}'", home.display()),
                    )?,
                )
            }
            None => Ok(None),
        }
    }

    fn print_stats(ctx: &Ctx, load_ms: f64, s: &Stats) {
        ctx.note(&format!(
            "stats: load {load_ms:.0} ms; prompt {} tokens in {:.0} ms ({:.1} tokens/s); generation {} tokens in {:.0} ms ({:.1} tokens/s); first token after {:.0} ms",
            s.prompt_tokens,
            s.prompt_time.as_secs_f64() * 1e3,
            s.prompt_tps(),
            s.gen_tokens,
            s.gen_time.as_secs_f64() * 1e3,
            s.gen_tps(),
            s.first_token.as_secs_f64() * 1e3,
        ));
    }

    pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        if args.temp.is_nan() || args.temp < 0.0 {
            anyhow::bail!(
                "--temp {} is not a temperature\nhelp: use 0 for greedy decoding or a positive number such as 0.8",
                args.temp
            );
        }
        let locations = args.place.locations(ctx)?;
        let catalog = Catalog::open(locations).context("finding the model")?;
        let candidates = catalog.resolve(args.model.as_deref())?;
        if let Some(m) = candidates.first() {
            m.check_runnable()?;
        }
        let machine = Machine::probe();
        let choice = choose(&candidates, &machine, args.ctx.map(u64::from))?;
        let m = &choice.model;

        // Verify before loading: signatures, then the file (or the cache's memory of it).
        if args.no_verify {
            if m.entry.is_some() {
                ctx.warn(&format!(
                    "--no-verify: '{}' is not checked against the signed manifest",
                    m.path.display()
                ));
            }
        } else {
            let policy = policy(&args, &catalog, m)?;
            let cache = VerifyCache::user();
            let bar = ctx.bar("verifying", false);
            let progress = progress_fn(&bar);
            let v = catalog
                .verify(m, policy.as_ref(), cache.as_ref(), &progress)
                .with_context(|| format!("verifying model '{}'", m.path.display()))?;
            bar.finish_and_clear();
            match v.signature {
                SignatureCheck::NoTrustedKey => ctx.warn(
                    "no trusted key: the model was checked against the manifest on its own tree, which catches damage but not tampering\nhelp: pass --pubkey HQ.pub, or install the stick to pin HQ's keys",
                ),
                SignatureCheck::NoManifest if args.verbose => ctx.note(&format!(
                    "'{}' is not in a signed manifest: not verified",
                    m.path.display()
                )),
                _ => {}
            }
            if args.verbose && v.file == FileCheckKind::Cached {
                ctx.note("verified before (verification cache): not hashed again");
            }
        }

        for (q, need) in &choice.passed_over {
            ctx.note(&format!(
                "{} {q} needs {}, more than the {} available: using a smaller quantization",
                m.name,
                mib(need.total()),
                mib(machine.available_ram)
            ));
        }
        let threads = args.threads.unwrap_or(machine.physical_cores as u32).max(1);
        let n_ctx = choice.need.ctx as u32;
        if let Some(train) = m.context_length() {
            if u64::from(n_ctx) > train {
                ctx.warn(&format!(
                    "--ctx {n_ctx} is more than the {train} tokens '{}' was trained with; answers may degrade",
                    m.name
                ));
            }
        }
        ctx.note(&format!(
            "model {} {} ({}, from {}): needs {} of {} available; {} threads, context {} tokens",
            m.name,
            m.quantization().unwrap_or_else(|| "?".into()),
            mib(m.size),
            m.origin,
            mib(choice.need.total()),
            mib(machine.available_ram),
            threads,
            n_ctx
        ));

        let missing = offgrid::launcher::cpu::missing_features();
        if !missing.is_empty() {
            return Err(offgrid::models::ModelError::CpuUnsupported {
                missing: missing.join(", "),
            }
            .into());
        }
        if args.verbose {
            ctx.note(&format!(
                "llama.cpp compiled for: {}",
                offgrid::launcher::cpu::compiled_features().join(" ")
            ));
        }
        let model = Model::load(
            &m.path,
            &LoadOptions {
                verbose: args.verbose,
            },
        )?;
        if model.template_fallback() {
            ctx.warn("the model carries no chat template llama.cpp knows: using ChatML");
        }
        let seed = args.seed.unwrap_or_else(|| {
            let mut b = [0u8; 4];
            let _ = getrandom::getrandom(&mut b);
            u32::from_le_bytes(b)
        });
        let mut chat = model.chat(&ChatOptions {
            ctx: n_ctx,
            threads,
            temp: args.temp,
            seed,
            system: args.system.clone(),
        })?;
        let load_ms = model.load_time.as_secs_f64() * 1e3;
        install_ctrl_c();
        let mut write = |s: &str| super::super::out(s);

        if let Some(prompt) = &args.prompt {
            ANSWERING.store(true, Ordering::SeqCst);
            let a = chat.ask(prompt, args.max_tokens, &STOP, &mut write);
            ANSWERING.store(false, Ordering::SeqCst);
            let a = a?;
            super::super::out("\n")?;
            if args.stats {
                print_stats(ctx, load_ms, &a.stats);
            }
            note_stop(ctx, a.stop);
            return Ok(if a.stop == StopReason::Interrupted {
                ExitCode::from(INTERRUPTED)
            } else {
                ExitCode::SUCCESS
            });
        }

        let tty = io::stdin().is_terminal();
        if tty {
            ctx.note("type a message and press Enter; /reset forgets the conversation; Ctrl-D or /exit quits; Ctrl-C stops an answer");
        }
        let stdin = io::stdin();
        let mut lines = stdin.lock().lines();
        loop {
            if tty {
                eprint!("> ");
                let _ = io::stderr().flush();
            }
            let Some(line) = lines.next() else { break };
            let line = line.context("reading stdin")?;
            let line = line.trim();
            match line {
                "" => continue,
                "/exit" | "/quit" => break,
                "/reset" => {
                    chat.reset();
                    ctx.note("conversation forgotten");
                    continue;
                }
                _ => {}
            }
            STOP.store(false, Ordering::SeqCst);
            ANSWERING.store(true, Ordering::SeqCst);
            let a = chat.ask(line, args.max_tokens, &STOP, &mut write);
            ANSWERING.store(false, Ordering::SeqCst);
            let a = a?;
            super::super::out("\n")?;
            if args.stats {
                print_stats(ctx, load_ms, &a.stats);
            }
            note_stop(ctx, a.stop);
        }
        Ok(ExitCode::SUCCESS)
    }

    fn note_stop(ctx: &Ctx, stop: StopReason) {
        match stop {
            StopReason::ContextFull => {
                ctx.warn("the context is full: the answer was cut\nhelp: raise --ctx")
            }
            StopReason::Interrupted => ctx.note("(stopped)"),
            StopReason::EndOfTurn | StopReason::MaxTokens => {}
        }
    }
}
