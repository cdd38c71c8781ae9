//! The transaction shared by install and apply: journal, stage beside the current
//! version, then one atomic switch (the state.json replacement), then cleanup.
//! Each step is a named fault point (see [`crate::update::fault`]).
//!
//! Order: `journal.json` written → staging folder filled (`staged`) → renamed to its
//! final name and made durable with one `syncfs` → its files interned into the home's
//! store ([`crate::update::store`]) and the store's new names made durable (`renamed`) → `state.json` replaced
//! (`flipped`, the switch) → `current` link repointed (`linked`) → versions no longer
//! kept removed (`cleaned`) → journal removed (fsynced). The steps after the switch need
//! no fsync of their own: recovery redoes them. A failure before the switch undoes the staging; after it, the
//! operation is complete and only cleanup remains (which recovery also does).

use std::fs;
use std::path::PathBuf;

use crate::fsutil::{create_parents, remove_tree, sync_tree};
use crate::update::fault;
use crate::update::home::{Home, Installed, Lock, State};
use crate::update::journal::{self, Journal};
use crate::update::{io_err, UpdateError};
use crate::version::Version;

/// A started transaction: the journal is written, the staging folder exists.
///
/// Dropped without [`Txn::commit`] or [`Txn::abort`] (an early return, a panic
/// unwinding), it undoes the staging itself, like rustup's `Transaction`; the durable
/// journal stays the source of truth when the process dies instead.
pub struct Txn<'h> {
    pub home: &'h Home,
    pub journal: Journal,
    pub staging: PathBuf,
    /// Committed or aborted: nothing left for `Drop` to undo.
    finished: bool,
}

impl<'h> Txn<'h> {
    /// Writes the journal and creates the staging folder.
    pub fn begin(
        home: &'h Home,
        _lock: &Lock,
        op: &str,
        from: Option<Installed>,
        to: &Version,
    ) -> Result<Txn<'h>, UpdateError> {
        let dir = Home::new_dir_name(to);
        let journal = Journal {
            format: journal::FORMAT.into(),
            op: op.into(),
            from,
            to: Installed {
                release: to.clone(),
                dir: dir.clone(),
            },
            staging: format!(".staging-{dir}"),
            started: crate::manifest::now_rfc3339(),
        };
        let vd = home.versions();
        fs::create_dir_all(&vd).map_err(io_err("create", &vd))?;
        crate::fsutil::fsync_dir(&home.root).map_err(io_err("sync", &home.root))?;
        journal::write(home, &journal)?;
        fault::point("journal-written");
        let staging = home.version_dir(&journal.staging);
        fs::create_dir(&staging).map_err(io_err("create", &staging))?;
        Ok(Txn {
            home,
            journal,
            staging,
            finished: false,
        })
    }

    /// Writes the release's manifest and signatures into the staging folder.
    pub fn write_release_meta(
        &self,
        manifest_bytes: &[u8],
        sigs: &[(String, String)],
    ) -> Result<(), UpdateError> {
        let write = |p: &std::path::Path, b: &[u8]| -> Result<(), UpdateError> {
            let mut f = crate::fsutil::create_new(p).map_err(io_err("create", p))?;
            std::io::Write::write_all(&mut f, b).map_err(io_err("write", p))
        };
        write(
            &self.staging.join(crate::manifest::MANIFEST_FILE),
            manifest_bytes,
        )?;
        let sd = self.staging.join(crate::manifest::SIGNATURES_DIR);
        fs::create_dir(&sd).map_err(io_err("create", &sd))?;
        for (name, text) in sigs {
            write(&sd.join(name), text.as_bytes())?;
        }
        Ok(())
    }

    /// Makes the manifest's folders a site on `host` gets (SPEC.md §18.1), empty ones
    /// included, each with its mode (the owner keeps `rwx`, so old releases can be
    /// removed). Run after every file is staged.
    pub fn make_dirs(&self, m: &crate::manifest::Manifest, host: &str) -> Result<(), UpdateError> {
        let dirs: Vec<_> = m.dirs.iter().filter(|d| d.installs_on(host)).collect();
        for d in &dirs {
            let p = crate::paths::join(&self.staging, &d.path);
            fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        #[cfg(unix)]
        for d in &dirs {
            use std::os::unix::fs::PermissionsExt;
            if let Some(mode) = crate::usb::pack::dir_mode(d.mode) {
                let p = crate::paths::join(&self.staging, &d.path);
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                    .map_err(io_err("set the mode of", &p))?;
            }
        }
        Ok(())
    }

    /// Where a bundle path goes in the staging folder (parents created).
    pub fn target(&self, bundle_path: &str) -> Result<PathBuf, UpdateError> {
        create_parents(&self.staging, bundle_path)
            .map_err(io_err("create a folder in", &self.staging))?;
        Ok(crate::paths::join(&self.staging, bundle_path))
    }

    /// Makes the staged version durable and switches to it: `new_state` becomes the
    /// state in one atomic step. Returns the versions removed by cleanup.
    pub fn commit(mut self, new_state: &State) -> Result<Vec<String>, UpdateError> {
        // From here on commit itself decides what to undo (nothing once switched).
        self.finished = true;
        let before = (|| -> Result<(), UpdateError> {
            fault::point("staged");
            let fin = self.home.version_dir(&self.journal.to.dir);
            fs::rename(&self.staging, &fin).map_err(io_err("rename", &self.staging))?;
            // One syncfs makes every staged file, folder and the rename durable.
            sync_tree(&fin).map_err(io_err("sync", &fin))?;
            let vd = self.home.versions();
            crate::fsutil::fsync_dir(&vd).map_err(io_err("sync", &vd))?;
            // The files are durable: now their names in the store may point at them.
            self.intern(&fin)?;
            fault::point("renamed");
            Ok(())
        })();
        if let Err(e) = before {
            self.undo();
            return Err(e);
        }
        if let Err(e) = self.home.write_state(new_state) {
            // The rename of state.json may have happened before the failure (e.g. the
            // directory fsync failed): only undo when the old state is still in place.
            let switched = self
                .home
                .read_state()
                .ok()
                .flatten()
                .is_some_and(|s| s.current.dir == self.journal.to.dir);
            if !switched {
                self.undo();
            }
            return Err(e);
        }
        fault::point("flipped");
        // The switch is done: failures (or a crash) below leave a complete update that
        // recovery tidies, so these steps need no fsync of their own.
        self.home.sync_current_link(new_state)?;
        fault::point("linked");
        let removed = journal::collect_garbage(self.home, new_state)?;
        fault::point("cleaned");
        journal::remove(self.home)?;
        Ok(removed)
    }

    /// Puts the files of the release folder `fin` into the home's store (each staged
    /// file was hashed as it was written), then makes the store's new names durable.
    fn intern(&self, fin: &std::path::Path) -> Result<(), UpdateError> {
        let mp = fin.join(crate::manifest::MANIFEST_FILE);
        let bytes = fs::read(&mp).map_err(io_err("read", &mp))?;
        let m = crate::manifest::Manifest::parse(&bytes).map_err(|e| UpdateError::BadHome {
            home: self.home.root.display().to_string(),
            reason: format!("the staged manifest.toml does not parse: {e}"),
            help: "run the command again",
        })?;
        let host = crate::platform::Platform::host().to_string();
        crate::update::store::intern_release(self.home, fin, &m, &host)?;
        let od = crate::update::store::objects_dir(self.home);
        if od.is_dir() {
            sync_tree(&od).map_err(io_err("sync", &od))?;
        }
        Ok(())
    }

    /// Undoes a transaction that failed before the switch (best effort; recovery
    /// finishes the job if this fails too).
    pub fn abort(mut self) {
        self.finished = true;
        self.undo();
    }

    fn undo(&self) {
        let fin = self.home.version_dir(&self.journal.to.dir);
        if remove_tree(&self.staging).is_ok() && remove_tree(&fin).is_ok() {
            let _ = crate::fsutil::fsync_dir(&self.home.versions());
            let _ = journal::remove(self.home);
        }
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.undo();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_uncommitted_undoes_its_staging_and_journal() {
        let d = tempfile::tempdir().unwrap();
        let home = Home::at(d.path().join("home"));
        let lock = home.lock(true, "test").unwrap();
        let v: Version = "1.0.0".parse().unwrap();
        let staging = {
            let t = Txn::begin(&home, &lock, "install", None, &v).unwrap();
            fs::write(t.target("a/b.txt").unwrap(), b"x").unwrap();
            assert!(home.journal_path().exists());
            t.staging.clone()
            // dropped here, as on an early return or a panic
        };
        assert!(!staging.exists(), "staging left behind");
        assert!(!home.journal_path().exists(), "journal left behind");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _t = Txn::begin(&home, &lock, "install", None, &v).unwrap();
            panic!("in the middle of staging");
        }));
        assert!(r.is_err());
        assert_eq!(fs::read_dir(home.versions()).unwrap().count(), 0);
        assert!(!home.journal_path().exists());
    }
}
