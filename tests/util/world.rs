//! Signed USB trees made independently of pack-usb (manifest written with the library
//! types, signed by the `minisign` CLI with the trusted comment SPEC.md §4 names), the
//! two-release [`World`] with the `offgrid` command on a private home and history, update
//! packs between its releases, and byte-for-byte checks of an installed version.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{host, keypair, noise, offgrid_bin, sha, sign_file, stripped_exe, tempdir};
use offgrid::manifest::{FileEntry, FileKind, Manifest, ModelInfo, DEFAULT_CHUNK_SIZE, FORMAT};

pub const BUNDLE: &str = "org.example.clinic";

/// One file of a test release.
pub struct F {
    pub path: &'static str,
    pub bytes: Vec<u8>,
    pub kind: FileKind,
}

pub fn f(path: &'static str, bytes: Vec<u8>, kind: FileKind) -> F {
    F { path, bytes, kind }
}

fn entry(fl: &F) -> FileEntry {
    let chunks = fl
        .bytes
        .chunks(DEFAULT_CHUNK_SIZE as usize)
        .map(sha)
        .collect();
    let platform =
        (fl.kind == FileKind::Binary).then(|| fl.path.split('/').nth(1).unwrap_or("").to_owned());
    FileEntry {
        path: fl.path.into(),
        size: fl.bytes.len() as u64,
        sha256: sha(&fl.bytes),
        kind: fl.kind,
        platform,
        mode: Some(if fl.kind == FileKind::Binary {
            0o755
        } else {
            0o644
        }),
        chunk_size: DEFAULT_CHUNK_SIZE,
        chunks,
        volume: None,
        parts: Vec::new(),
        model: (fl.kind == FileKind::Model).then(|| ModelInfo {
            format: None,
            name: Path::new(fl.path)
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            ..Default::default()
        }),
    }
}

/// Writes a signed USB tree of [`BUNDLE`] at `root`: files, manifest.toml,
/// signatures/KEYID.minisig by each key (stock minisign). Returns the manifest.
pub fn make_tree(
    root: &Path,
    version: &str,
    created: &str,
    files: &[F],
    keys: &[&Path],
) -> Manifest {
    make_tree_of(BUNDLE, root, version, created, files, keys)
}

/// [`make_tree`] of bundle `bundle`.
pub fn make_tree_of(
    bundle: &str,
    root: &Path,
    version: &str,
    created: &str,
    files: &[F],
    keys: &[&Path],
) -> Manifest {
    fs::create_dir_all(root.join("signatures")).unwrap();
    for fl in files {
        let p = root.join(fl.path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &fl.bytes).unwrap();
    }
    let m = Manifest {
        dirs: Vec::new(),
        commands: Vec::new(),
        format: FORMAT.into(),
        bundle_id: bundle.into(),
        release: version.parse().unwrap(),
        created: created.into(),
        platforms: vec![host()],
        default_model: None,
        expires: None,
        volumes: None,
        files: files.iter().map(entry).collect(),
    };
    let text = m.to_toml();
    fs::write(root.join("manifest.toml"), &text).unwrap();
    let comment = format!(
        "offgrid bundle={bundle} release={version} manifest_sha256={}",
        sha(text.as_bytes())
    );
    for k in keys {
        sign_file(
            &root.join("manifest.toml"),
            k,
            &comment,
            &root.join("signatures"),
        );
    }
    let names: Vec<_> = fs::read_dir(root.join("signatures"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), keys.len(), "{names:?}");
    m
}

/// A test world: a temp dir with `home/`, `hq/`, keys and two releases.
pub struct World {
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    pub pubkey: PathBuf,
    pub v1: Manifest,
    pub v2: Manifest,
}

impl World {
    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn home(&self) -> PathBuf {
        self.p("home")
    }
    /// `offgrid ARGS` with this world's home and history.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("offgrid").unwrap();
        c.current_dir(self.dir.path())
            .env("OFFGRID_HOME", self.home())
            .env("OFFGRID_HQ", self.p("hq"))
            .env("OFFGRID_CACHE_DIR", self.p("cache"))
            .env_remove("OFFGRID_FAULT_AT")
            .env_remove("OFFGRID_PASSWORD");
        c
    }
    pub fn std_cmd(&self) -> Command {
        let mut c = Command::new(offgrid_bin());
        c.current_dir(self.dir.path())
            .env("OFFGRID_HOME", self.home())
            .env("OFFGRID_HQ", self.p("hq"))
            .env("OFFGRID_CACHE_DIR", self.p("cache"))
            .env_remove("OFFGRID_FAULT_AT");
        c
    }
}

/// Release 1.0.0 and 1.1.0 of a small bundle: a model edited in place (delta), a doc
/// changed, a file unchanged, a file removed, a file added, and this very offgrid
/// binary (with bytes appended in 1.1.0, which ELF ignores) so the install can run it.
pub fn world(model_size: usize) -> World {
    world_in(model_size, true)
}

/// [`world`] in RAM or on disk.
pub fn world_in(model_size: usize, ram: bool) -> World {
    let dir = tempdir(ram);
    let (key, pubkey) = keypair(dir.path(), "hq");
    let exe = stripped_exe(dir.path());
    let bin_path: &'static str = Box::leak(format!("bin/{}/offgrid", host()).into_boxed_str());
    let model1 = noise(model_size, 1);
    let mut model2 = model1.clone();
    for i in (0..model2.len()).step_by(97_003) {
        model2[i] ^= 0x5a;
    }
    model2.extend_from_slice(&noise(4096, 9));
    let mut exe2 = exe.clone();
    exe2.extend_from_slice(b"\0offgrid 1.1.0 build padding\0");
    let v1 = make_tree(
        &dir.path().join("v1"),
        "1.0.0",
        "2026-11-01T10:00:00Z",
        &[
            f("models/tiny.gguf", model1, FileKind::Model),
            f(
                "README.txt",
                b"offgrid clinic bundle 1.0.0\n".to_vec(),
                FileKind::Doc,
            ),
            f(
                "CHANGELOG.txt",
                b"1.0.0: first release\n".to_vec(),
                FileKind::Changelog,
            ),
            f(
                "data/same.txt",
                b"this file never changes\n".repeat(100),
                FileKind::Data,
            ),
            f(
                "data/old.txt",
                b"dropped in 1.1.0\n".to_vec(),
                FileKind::Data,
            ),
            f(bin_path, exe, FileKind::Binary),
        ],
        &[&key],
    );
    let v2 = make_tree(
        &dir.path().join("v2"),
        "1.1.0",
        "2026-11-15T10:00:00Z",
        &[
            f("models/tiny.gguf", model2, FileKind::Model),
            f(
                "README.txt",
                b"offgrid clinic bundle 1.1.0\nnow with more\n".to_vec(),
                FileKind::Doc,
            ),
            f(
                "CHANGELOG.txt",
                b"1.1.0: model tuned for the clinics\n1.0.0: first release\n".to_vec(),
                FileKind::Changelog,
            ),
            f(
                "data/same.txt",
                b"this file never changes\n".repeat(100),
                FileKind::Data,
            ),
            f("data/new.txt", b"new in 1.1.0\n".to_vec(), FileKind::Data),
            f(bin_path, exe2, FileKind::Binary),
        ],
        &[&key],
    );
    World {
        dir,
        key,
        pubkey,
        v1,
        v2,
    }
}

/// `offgrid create-update-pack ARGS --output OUT --sign-with KEY` in the world's folder,
/// not yet run: `args` name the releases (`--to 1.1.0 --since 2026-11-10`, …) and other
/// flags; the caller may add more, or an environment, and asserts what it expects.
pub fn pack_cmd(w: &World, key: &Path, out: &str, args: &[&str]) -> assert_cmd::Command {
    let mut c = w.cmd();
    c.arg("create-update-pack")
        .args(args)
        .args(["--output", out, "--sign-with"])
        .arg(key);
    c
}

/// The arguments [`make_pack`] gives `create-update-pack`: record v1, then the pack from
/// its 1.0.0 to the tree v2 (1.1.0).
pub const V1_TO_V2: [&str; 6] = ["--record", "v1", "--tree", "v2", "--since", "1.0.0"];

/// Records v1, then writes the 1.0.0 -> 1.1.0 pack at `out` signed by the HQ key (extra
/// args appended).
pub fn make_pack(w: &World, out: &str, extra: &[&str]) {
    make_pack_by(w, &w.key, out, extra)
}

/// [`make_pack`] signed by `key`.
pub fn make_pack_by(w: &World, key: &Path, out: &str, extra: &[&str]) {
    for v in ["v1", "v2"] {
        let n = fs::read_dir(w.p(v).join("signatures")).unwrap().count();
        assert_eq!(n, 1, "{v} signatures before make_pack");
    }
    pack_cmd(w, key, out, &V1_TO_V2)
        .args(extra)
        .assert()
        .success();
}

/// The folder `home/current` points at.
pub fn current_dir(home: &Path) -> PathBuf {
    let l = fs::read_link(home.join("current")).expect("current link");
    home.join(l)
}

/// Asserts the installed version under `home` is exactly `m`, byte for byte, and that its
/// offgrid binary runs.
pub fn assert_installed(home: &Path, m: &Manifest) {
    let dir = current_dir(home);
    let mt = fs::read_to_string(dir.join("manifest.toml")).unwrap();
    assert_eq!(
        Manifest::parse(mt.as_bytes()).unwrap(),
        *m,
        "installed manifest differs"
    );
    let mut n = 0;
    for e in walkdir::WalkDir::new(&dir) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            n += 1;
        }
    }
    let sigs = fs::read_dir(dir.join("signatures")).unwrap().count();
    assert_eq!(
        n,
        m.files.len() + 1 + sigs,
        "extra or missing files in {}",
        dir.display()
    );
    for f in &m.files {
        let b = fs::read(dir.join(&f.path)).unwrap_or_else(|e| panic!("{}: {e}", f.path));
        assert_eq!(sha(&b), f.sha256, "{} differs", f.path);
    }
    let exe = dir.join(format!("bin/{}/offgrid", host()));
    let out = Command::new(&exe).arg("--version").output().unwrap();
    assert!(
        out.status.success(),
        "installed binary does not run: {out:?}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("offgrid "));
}
