//! Downloading one URL into a [`Partial`]: the missing bytes of each part are asked for
//! with `Range` (and `If-Range` with the validator seen when the download started), on
//! several connections in parallel. A ranged answer must be `206` with exactly the
//! asked `Content-Range`; anything else restarts that part cleanly or, when the server
//! ignores ranges or the file changed, ends this attempt with a reason the caller acts
//! on ([`SourceError`]). Failed reads are retried with backoff; a connection that
//! delivers nothing for the stall time is dropped (the client's per-read timeout).
//!
//! A hasher thread ([`Follower`], on the second core) follows the contiguous downloaded
//! prefix, so the whole-file sha256 is ready when the last byte lands (no second pass
//! over a 40 GB file). Each connection writes what it receives at once and hands its
//! 1 MiB receive buffers to the hasher, which keeps those that arrive ahead of the
//! prefix (up to 64 MiB ahead: four connections on 16 MiB parts) and hashes each from
//! memory when it is next in file order, so no byte is read twice; only bytes farther
//! ahead, or on disk from an earlier run, are read back from the page cache when the
//! prefix reaches them. If any part was rewound during the run, the file is hashed
//! again from disk instead.
//! The state is saved every 20 ms (no fsync: a killed fetch loses at most that much of
//! each connection's bytes) and durably every 5 s (data synced first; what survives a
//! power loss, see [`super::partial`]).

use std::collections::VecDeque;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::partial::Partial;
use super::progress::{Event, RateLimiter};
use super::{excerpt, io_err, FetchError, Options};

/// Why one URL could not deliver the file in this attempt.
#[derive(Debug)]
pub enum SourceError {
    /// The server answered a ranged request with the whole file (same validator): it does
    /// not do ranges. The caller restarts with one part and no `Range`.
    NoRanges,
    /// The server's validator changed: the file is not the one started on.
    Changed(String),
    /// Gave up on this URL after retries (or a permanent error such as 404).
    Failed(String),
    /// A local error (disk); not the server's fault.
    Local(FetchError),
}

/// Downloads every missing byte of `partial` from `url`; returns the file's sha256.
/// `ranges == false`: one part, asked for without `Range` (a server without ranges).
pub fn download(
    agent: &ureq::Agent,
    url: &str,
    partial: &mut Partial,
    opts: &Options,
    ranges: bool,
    limiter: Option<&RateLimiter>,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<String, SourceError> {
    let Some(state) = partial.state.clone() else {
        return Err(SourceError::Failed("internal: no download state".into()));
    };
    let parts = state.done.len();
    let done: Vec<AtomicU64> = state.done.iter().map(|d| AtomicU64::new(*d)).collect();
    let queue: Mutex<VecDeque<usize>> = Mutex::new(
        (0..parts)
            .filter(|&i| {
                let (s, e) = state.range(i);
                state.done[i] < e - s
            })
            .collect(),
    );
    let abort = AtomicBool::new(false);
    let rewound = AtomicBool::new(false);
    let failure: Mutex<Option<SourceError>> = Mutex::new(None);
    let validator = state
        .etag
        .clone()
        .filter(|e| !e.starts_with("W/"))
        .or_else(|| state.last_modified.clone());
    let workers = opts.connections.clamp(1, 64).min(parts.max(1));
    // Without a fixed count, connections are added while they raise the throughput.
    let mut climb = opts.climb.then(|| super::climb::Climb::new(workers));
    let allowed = AtomicUsize::new(climb.as_ref().map_or(workers, |c| c.allowed()));
    let wfile = partial
        .file
        .try_clone()
        .map_err(|e| SourceError::Local(io_err("open", &partial.data_path)(e)))?;
    let file = &wfile;
    let st = &state;
    let fail = |e: SourceError| {
        abort.store(true, Ordering::SeqCst);
        if let Ok(mut f) = failure.lock() {
            if f.is_none() {
                *f = Some(e);
            }
        }
    };

    let (follower, chunks) = Follower::new(workers, state.part_size);
    let follower = &follower;
    let digest = std::thread::scope(|scope| {
        let hasher = scope.spawn(|| {
            let r = follower.run(chunks, file, st, &done, &abort);
            follower.running.store(false, Ordering::SeqCst);
            r
        });
        let mut handles = Vec::new();
        for w in 0..workers {
            let slot = &follower.slots[w];
            let (queue, done, abort, rewound, fail) = (&queue, &done, &abort, &rewound, &fail);
            let allowed = &allowed;
            let validator = validator.as_deref();
            handles.push(scope.spawn(move || {
                while !abort.load(Ordering::SeqCst) {
                    if w >= allowed.load(Ordering::SeqCst) {
                        // Not allowed to run now: wait, unless no part is left to take.
                        if queue.lock().map_or(true, |q| q.is_empty()) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    let Some(i) = follower.next_part(queue, st, abort) else {
                        break;
                    };
                    let job = Job {
                        agent,
                        url,
                        file,
                        state: st,
                        done: &done[i],
                        index: i,
                        validator,
                        ranges,
                        opts,
                        limiter,
                        abort,
                        rewound,
                        follower,
                        slot,
                        on_event,
                    };
                    if let Err(e) = job.run() {
                        fail(e);
                    }
                }
            }));
        }
        // The coordinator: progress events and checkpoints while the workers run.
        let mut last_sync = Instant::now();
        let mut last_event = Instant::now() - Duration::from_secs(1);
        let mut saved: Vec<u64> = st.done.clone();
        loop {
            let finished = handles.iter().all(|h| h.is_finished());
            let now_done: Vec<u64> = done.iter().map(|d| d.load(Ordering::SeqCst)).collect();
            if let Some(c) = climb.as_mut() {
                let received = now_done
                    .iter()
                    .sum::<u64>()
                    .saturating_sub(st.done.iter().sum());
                allowed.store(c.step(Instant::now(), received), Ordering::SeqCst);
            }
            if finished || last_event.elapsed() >= Duration::from_millis(100) {
                on_event(Event::Progress {
                    done: now_done.iter().sum(),
                    total: st.size,
                });
                last_event = Instant::now();
            }
            if now_done != saved || finished {
                if let Some(s) = partial.state.as_mut() {
                    s.done = now_done.clone();
                    if !s.sources.iter().any(|u| u == url) {
                        s.sources.push(url.to_owned());
                    }
                }
                let durable = finished || last_sync.elapsed() >= Duration::from_secs(5);
                let r = if durable {
                    last_sync = Instant::now();
                    partial.save()
                } else {
                    partial.save_quick()
                };
                if let Err(e) = r {
                    fail(SourceError::Local(e));
                }
                saved = now_done;
            }
            if finished {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for h in handles {
            let _ = h.join();
        }
        follower.close();
        if abort.load(Ordering::SeqCst) {
            return None;
        }
        match hasher.join() {
            Ok(Ok(Some(d))) => Some(Ok(d)),
            Ok(Ok(None)) | Err(_) => None,
            Ok(Err(e)) => Some(Err(e)),
        }
    });
    if let Ok(mut f) = failure.lock() {
        if let Some(e) = f.take() {
            return Err(e);
        }
    }
    match digest {
        Some(Ok(d)) if !rewound.load(Ordering::SeqCst) => Ok(d),
        Some(Err(e)) => Err(SourceError::Local(e)),
        _ => {
            // Parts were rewound (or the hasher stopped): hash what is on disk.
            let (_, h) = crate::hash::sha256_file(&partial.data_path)
                .map_err(|e| SourceError::Local(io_err("read", &partial.data_path)(e)))?;
            Ok(h)
        }
    }
}

// Bytes a connection writes between two requests to start their write-back.
use crate::fsutil::WRITEBACK_STEP;

/// Bytes a connection collects before handing them to the hasher.
const CHUNK: usize = 1 << 20;

/// Chunks in the channel to the hasher (the network waits when it is this far behind).
const QUEUED_CHUNKS: usize = 8;

/// How far ahead of the hashed prefix received chunks are kept in memory for the hasher
/// (four connections on 16 MiB parts stay within it); bytes farther ahead are read back
/// from the file when the prefix reaches them. Bounds the hasher's memory.
const MAX_AHEAD: u64 = 64 << 20;

/// One received chunk, already written at `offset`: the hasher hashes it from memory
/// when it is next in file order.
struct Chunk {
    offset: u64,
    buf: Vec<u8>,
    len: usize,
}

/// The whole-file sha256, following the contiguous prefix of finished bytes: chunks are
/// hashed straight from the receive buffers, in file order (those that arrive ahead of
/// the prefix wait in memory, up to [`MAX_AHEAD`]); bytes not handed over (farther
/// ahead, or on disk from an earlier run) are read back from the file once the prefix
/// reaches them. Runs on its own thread ([`Follower::run`]).
struct Follower {
    /// Bytes hashed so far (connections skip handing over chunks far beyond it).
    hashed: AtomicU64,
    /// False once [`Follower::run`] has returned (nobody waits for `hashed` then).
    running: AtomicBool,
    tx: Mutex<Option<std::sync::mpsc::SyncSender<Chunk>>>,
    /// Spent chunk buffers, for the connections to fill again.
    pool: Mutex<Vec<Vec<u8>>>,
    /// Per connection: where the chunk it is collecting starts (`u64::MAX`: none).
    slots: Vec<AtomicU64>,
    /// The download's part size: a part may be started up to [`MAX_AHEAD`] beyond the
    /// prefix, so its chunks reach at most this much farther.
    part_size: u64,
}

impl Follower {
    fn new(connections: usize, part_size: u64) -> (Follower, std::sync::mpsc::Receiver<Chunk>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUED_CHUNKS);
        let f = Follower {
            hashed: AtomicU64::new(0),
            running: AtomicBool::new(true),
            tx: Mutex::new(Some(tx)),
            pool: Mutex::new(Vec::new()),
            slots: (0..connections).map(|_| AtomicU64::new(u64::MAX)).collect(),
            part_size,
        };
        (f, rx)
    }

    /// A chunk buffer to fill (recycled when one is free).
    fn buffer(&self) -> Vec<u8> {
        self.pool
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_else(|| vec![0u8; CHUNK])
    }

    /// The next part for a connection to download, in file order; `None` when none is
    /// left. A part that starts more than [`MAX_AHEAD`] beyond the hashed prefix waits
    /// until the prefix comes near (while the hasher runs), so a lagging connection at
    /// the front gets the link to itself instead of the others running on: every chunk
    /// then reaches the hasher in memory and memory stays bounded.
    fn next_part(
        &self,
        queue: &Mutex<VecDeque<usize>>,
        st: &super::partial::State,
        abort: &AtomicBool,
    ) -> Option<usize> {
        loop {
            let mut q = queue.lock().ok()?;
            let &i = q.front()?;
            let near = st.range(i).0 <= self.hashed.load(Ordering::SeqCst) + MAX_AHEAD;
            if near || !self.running.load(Ordering::SeqCst) || abort.load(Ordering::SeqCst) {
                return q.pop_front();
            }
            drop(q);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Gives a spent buffer back for reuse.
    fn recycle(&self, buf: Vec<u8>) {
        if let Ok(mut p) = self.pool.lock() {
            p.push(buf);
        }
    }

    /// Hands over `buf[..len]`, written at `offset`, and returns the buffer to fill next:
    /// a fresh one when the hasher took it, else `buf` again (the chunk is too far ahead
    /// of the hasher to be kept; it reads those bytes back later).
    fn offer(&self, offset: u64, buf: Vec<u8>, len: usize) -> Vec<u8> {
        let limit = self.hashed.load(Ordering::SeqCst) + MAX_AHEAD + self.part_size;
        if len == 0 || offset + len as u64 > limit {
            return buf;
        }
        let tx = self.tx.lock().ok().and_then(|t| t.clone());
        match tx {
            Some(tx) => match tx.send(Chunk { offset, buf, len }) {
                Ok(()) => self.buffer(),
                Err(std::sync::mpsc::SendError(c)) => c.buf,
            },
            None => buf,
        }
    }

    /// No more chunks will come (every connection has stopped).
    fn close(&self) {
        if let Ok(mut t) = self.tx.lock() {
            *t = None;
        }
    }

    /// Hashes the file from the start to `st.size`. `Ok(None)`: stopped by `abort`, or
    /// the connections stopped before the file was complete.
    fn run(
        &self,
        rx: std::sync::mpsc::Receiver<Chunk>,
        file: &std::fs::File,
        st: &super::partial::State,
        done: &[AtomicU64],
        abort: &AtomicBool,
    ) -> Result<Option<String>, FetchError> {
        use std::collections::BTreeMap;
        use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
        let mut h = Sha256::new();
        let mut pos = 0u64;
        let mut back: Vec<u8> = Vec::new();
        let mut closed = false;
        // Chunks received ahead of `pos`, by offset (at most MAX_AHEAD of them).
        let mut ahead: BTreeMap<u64, Chunk> = BTreeMap::new();
        while pos < st.size {
            if abort.load(Ordering::SeqCst) {
                return Ok(None);
            }
            // Take what has arrived without waiting.
            loop {
                match rx.try_recv() {
                    Ok(c) => self.keep(&mut ahead, c, pos),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            // Hash the chunks that continue the prefix, from memory.
            let mut progressed = false;
            while let Some(entry) = ahead.first_entry() {
                let (offset, end) = (*entry.key(), entry.key() + entry.get().len as u64);
                if offset > pos {
                    break;
                }
                let c = entry.remove();
                if end > pos {
                    h.update(&c.buf[(pos - offset) as usize..c.len]);
                    pos = end;
                    progressed = true;
                }
                self.recycle(c.buf);
            }
            if !progressed {
                // The next bytes are on disk but not in memory (handed over too far
                // ahead, or from an earlier run): read them back, up to the next chunk
                // in memory or being collected. Bytes a connection is still collecting
                // are waited for, not read back; so are bytes not downloaded yet.
                let avail = prefix(st, done);
                let (pending, next) = self.collecting(pos);
                let next = next.min(ahead.keys().next().copied().unwrap_or(u64::MAX));
                if avail > pos && !pending && next > pos {
                    let to = avail.min(next).min(pos + CHUNK as u64);
                    read_back(file, &mut h, &mut back, pos, to)?;
                    pos = to;
                } else if closed {
                    // Every connection stopped and the prefix does not reach the end.
                    return Ok(None);
                } else {
                    match rx.recv_timeout(Duration::from_millis(5)) {
                        Ok(c) => self.keep(&mut ahead, c, pos),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => closed = true,
                    }
                }
            }
            self.hashed.store(pos, Ordering::SeqCst);
        }
        Ok(Some(hex::encode(h.finalize())))
    }

    /// Keeps a received chunk until the prefix reaches it (a newer chunk at the same
    /// offset replaces an older one); a chunk wholly before `pos` is spent.
    fn keep(&self, ahead: &mut std::collections::BTreeMap<u64, Chunk>, c: Chunk, pos: u64) {
        if c.offset + c.len as u64 <= pos {
            self.recycle(c.buf);
        } else if let Some(old) = ahead.insert(c.offset, c) {
            self.recycle(old.buf);
        }
    }

    /// Whether a connection is collecting the chunk holding byte `pos`, and where the
    /// nearest chunk being collected after `pos` starts (`u64::MAX`: none).
    fn collecting(&self, pos: u64) -> (bool, u64) {
        let mut next = u64::MAX;
        for s in &self.slots {
            let at = s.load(Ordering::SeqCst);
            if at <= pos && pos < at.saturating_add(CHUNK as u64) {
                return (true, at);
            }
            if at > pos {
                next = next.min(at);
            }
        }
        (false, next)
    }
}

/// End of the contiguous finished prefix of the file.
fn prefix(st: &super::partial::State, done: &[AtomicU64]) -> u64 {
    let mut avail = 0;
    for (i, d) in done.iter().enumerate() {
        let (s, e) = st.range(i);
        let d = d.load(Ordering::SeqCst);
        avail = s + d;
        if d < e - s {
            break;
        }
    }
    avail
}

/// Hashes bytes `[from, to)` of `file` (already written) into `h`.
fn read_back(
    file: &std::fs::File,
    h: &mut Sha256,
    buf: &mut Vec<u8>,
    mut from: u64,
    to: u64,
) -> Result<(), FetchError> {
    if buf.is_empty() {
        buf.resize(CHUNK, 0);
    }
    while from < to {
        let n = ((to - from) as usize).min(buf.len());
        read_at(file, &mut buf[..n], from).map_err(|e| FetchError::Io {
            action: "read",
            path: "(partial download)".into(),
            source: e,
        })?;
        h.update(&buf[..n]);
        from += n as u64;
    }
    Ok(())
}

struct Job<'a> {
    agent: &'a ureq::Agent,
    url: &'a str,
    file: &'a std::fs::File,
    state: &'a super::partial::State,
    done: &'a AtomicU64,
    index: usize,
    validator: Option<&'a str>,
    ranges: bool,
    opts: &'a Options,
    limiter: Option<&'a RateLimiter>,
    abort: &'a AtomicBool,
    rewound: &'a AtomicBool,
    follower: &'a Follower,
    /// Where the chunk this connection is collecting starts (`u64::MAX`: none).
    slot: &'a AtomicU64,
    on_event: &'a (dyn Fn(Event) + Sync),
}

/// What one attempt at a part ended with.
enum Attempt {
    Complete,
    /// Worth retrying (network trouble, 5xx); `progress` says whether bytes arrived.
    Retry {
        reason: String,
        progress: bool,
    },
    Fatal(SourceError),
}

impl Job<'_> {
    fn run(&self) -> Result<(), SourceError> {
        let mut failures = 0u32;
        loop {
            if self.abort.load(Ordering::SeqCst) {
                return Ok(());
            }
            let attempt = self.attempt();
            self.slot.store(u64::MAX, Ordering::SeqCst);
            match attempt {
                Attempt::Complete => return Ok(()),
                Attempt::Fatal(e) => return Err(e),
                Attempt::Retry { reason, progress } => {
                    failures = if progress { 1 } else { failures + 1 };
                    if failures >= self.opts.retries.max(1) {
                        return Err(SourceError::Failed(format!(
                            "{reason} (gave up after {failures} attempts)"
                        )));
                    }
                    (self.on_event)(Event::Retry {
                        url: self.url.to_owned(),
                        attempt: failures,
                        reason: reason.clone(),
                    });
                    let pause = self
                        .opts
                        .backoff
                        .saturating_mul(1 << (failures - 1).min(4))
                        .min(Duration::from_secs(8));
                    std::thread::sleep(pause);
                }
            }
        }
    }

    fn attempt(&self) -> Attempt {
        let (start, end) = self.state.range(self.index);
        let have = self.done.load(Ordering::SeqCst);
        let from = start + have;
        if from >= end {
            return Attempt::Complete;
        }
        let mut req = super::client::authed(self.agent.get(self.url), self.url, self.opts);
        let ranged = self.ranges;
        if ranged {
            req = req.header("Range", format!("bytes={from}-{}", end - 1));
            if let Some(v) = self.validator {
                req = req.header("If-Range", v);
            }
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    reason: format!("request failed: {e}"),
                    progress: false,
                }
            }
        };
        let status = resp.status().as_u16();
        match status {
            206 if ranged => {
                let cr = super::client::header(&resp, "content-range").unwrap_or_default();
                let want = format!("bytes {from}-{}/{}", end - 1, self.state.size);
                if cr != want {
                    self.rewind(start);
                    (self.on_event)(Event::Restart {
                        url: self.url.to_owned(),
                        reason: format!(
                            "asked for '{want}', the server sent Content-Range '{}'",
                            excerpt(&cr)
                        ),
                    });
                    return Attempt::Retry {
                        reason: format!("wrong Content-Range '{}'", excerpt(&cr)),
                        progress: false,
                    };
                }
            }
            200 if !ranged => {
                if from != 0 {
                    self.rewind(start);
                }
            }
            200 => {
                // Range ignored, or If-Range failed because the file changed.
                let etag = super::client::header(&resp, "etag");
                let lm = super::client::header(&resp, "last-modified");
                let same = match (&self.state.etag, &etag) {
                    (Some(a), Some(b)) => a == b,
                    _ => self.state.last_modified.is_some() && self.state.last_modified == lm,
                };
                let same = same
                    || (self.state.etag.is_none()
                        && self.state.last_modified.is_none()
                        && etag.is_none()
                        && lm.is_none());
                return Attempt::Fatal(if same {
                    SourceError::NoRanges
                } else {
                    SourceError::Changed(format!(
                        "the file changed on the server (ETag {} is now {})",
                        self.state
                            .etag
                            .as_deref()
                            .map(excerpt)
                            .unwrap_or_else(|| "-".into()),
                        etag.as_deref().map(excerpt).unwrap_or_else(|| "-".into())
                    ))
                });
            }
            404 | 410 | 401 | 403 => {
                return Attempt::Fatal(SourceError::Failed(format!("HTTP {status}")));
            }
            _ => {
                return Attempt::Retry {
                    reason: format!("HTTP {status}"),
                    progress: false,
                }
            }
        }
        let mut reader = resp.into_body().into_reader();
        let mut pos = self.done.load(Ordering::SeqCst) + start;
        let mut flushed = pos;
        let mut progress = false;
        // Received bytes are written as they come (progress and resume stay current) and
        // collected in `buf` for the hasher, which takes them whole.
        let mut buf = self.follower.buffer();
        let mut chunk_at = pos;
        self.slot.store(chunk_at, Ordering::SeqCst);
        let mut fill = 0usize;
        let mut ended = None;
        while pos < end && ended.is_none() {
            if self.abort.load(Ordering::SeqCst) {
                return Attempt::Complete;
            }
            let want = (buf.len() - fill).min((end - pos) as usize);
            let want = match self.limiter {
                Some(_) => want.min(64 << 10),
                None => want,
            };
            let n = match reader.read(&mut buf[fill..fill + want]) {
                Ok(0) => {
                    ended = Some(format!(
                        "the connection closed at byte {pos} of {}",
                        self.state.size
                    ));
                    0
                }
                Ok(n) => n,
                Err(e) => {
                    ended = Some(
                        if e.kind() == std::io::ErrorKind::TimedOut
                            || e.to_string().contains("timeout")
                        {
                            format!(
                                "stalled: no bytes for {} s at byte {pos}",
                                self.opts.stall.as_secs_f32()
                            )
                        } else {
                            format!("reading failed at byte {pos}: {e}")
                        },
                    );
                    0
                }
            };
            if n > 0 {
                if let Some(l) = self.limiter {
                    l.take(n);
                }
                if let Err(e) = write_at(self.file, &buf[fill..fill + n], pos) {
                    return Attempt::Fatal(SourceError::Local(FetchError::Io {
                        action: "write",
                        path: "(partial download)".into(),
                        source: e,
                    }));
                }
                fill += n;
                pos += n as u64;
                progress = true;
                self.done.store(pos - start, Ordering::SeqCst);
            }
            if fill == buf.len() || pos == end || ended.is_some() {
                buf = self.follower.offer(chunk_at, buf, fill);
                chunk_at = pos;
                self.slot.store(chunk_at, Ordering::SeqCst);
                fill = 0;
            }
            // Start writing finished bytes to the device as they come, so the durable
            // checkpoints and the final sync do not wait for a whole file's pages.
            if pos - flushed >= WRITEBACK_STEP {
                crate::fsutil::start_writeback(self.file, flushed, pos - flushed);
                flushed = pos;
            }
        }
        crate::fsutil::start_writeback(self.file, flushed, pos - flushed);
        match ended {
            Some(reason) => Attempt::Retry { reason, progress },
            None => Attempt::Complete,
        }
    }

    /// Restarts this part from its beginning.
    fn rewind(&self, _start: u64) {
        self.rewound.store(true, Ordering::SeqCst);
        self.done.store(0, Ordering::SeqCst);
    }
}

#[cfg(unix)]
fn write_at(f: &std::fs::File, buf: &[u8], off: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, buf, off)
}

#[cfg(unix)]
fn read_at(f: &std::fs::File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, off)
}

#[cfg(windows)]
fn write_at(f: &std::fs::File, mut buf: &[u8], mut off: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        let n = f.seek_write(buf, off)?;
        buf = &buf[n..];
        off += n as u64;
    }
    Ok(())
}

#[cfg(windows)]
fn read_at(f: &std::fs::File, mut buf: &mut [u8], mut off: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        let n = f.seek_read(buf, off)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[n..];
        off += n as u64;
    }
    Ok(())
}
