//! `delta_probe`: runs one `offgrid::update::delta` create or apply in its own process, so
//! `cargo xtask bench delta` can measure its peak memory (GNU time) and wall time apart
//! from the benchmark driver. Not a product command.
//!
//! Usage:
//!   delta_probe create OLD NEW OUT [--max-memory-mib N] [--window-mib N] [--level N] [--threads N] [--exe 0|1]
//!   delta_probe apply OLD DELTA OUT NEW_SIZE
//!
//! `create` prints the statistics as `key=value` pairs on one line.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use offgrid::update::delta::{self, DeltaOptions};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["create", old, new, out, rest @ ..] => create(old, new, out, rest),
        ["apply", old, d, out, size] => {
            let mut o = File::open(old).with_context(|| format!("opening '{old}'"))?;
            let mut r = BufReader::new(File::open(d).with_context(|| format!("opening '{d}'"))?);
            let mut w = BufWriter::new(File::create(out)?);
            let n = delta::apply(&mut o, &mut r, &mut w, size.parse()?)?;
            w.flush()?;
            println!("written={n}");
            Ok(())
        }
        _ => bail!("usage: delta_probe create OLD NEW OUT [--max-memory-mib N] [--window-mib N] [--level N] [--threads N] [--exe 0|1] | apply OLD DELTA OUT NEW_SIZE"),
    }
}

fn create(old: &str, new: &str, out: &str, rest: &[&str]) -> Result<()> {
    let mut opts = DeltaOptions::default();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let v: u64 = it
            .next()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{flag} takes a number"))?;
        match *flag {
            "--max-memory-mib" => opts.max_memory = v << 20,
            "--window-mib" => opts.window_size = v << 20,
            "--level" => opts.zstd_level = v as i32,
            "--threads" => opts.threads = v as usize,
            "--exe" => opts.exe = v != 0,
            other => bail!("unknown option '{other}'"),
        }
    }
    let mut w = BufWriter::new(File::create(out).with_context(|| format!("creating '{out}'"))?);
    let s = delta::create(Path::new(old), Path::new(new), &mut w, &opts)?;
    w.flush()?;
    println!(
        "delta_size={} window_mib={} in_flight={} windows={} copy={} zstd={} bidiff={} zstd_ref={} x86_streams={} gguf={} elf_segments={} elf_record={} encodings={} bound_mib={}",
        s.delta_size,
        s.window_size >> 20,
        s.windows_in_flight,
        s.windows,
        s.copy_windows,
        s.zstd_windows,
        s.bidiff_windows,
        s.zstd_ref_windows,
        s.x86_streams_windows,
        s.gguf_aware,
        s.elf_segments,
        s.elf_record,
        s.encodings,
        delta::memory_bound(s.window_size, s.windows_in_flight) >> 20
    );
    Ok(())
}
