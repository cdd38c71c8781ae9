//! nginx (Debian's nginx-light, `/usr/sbin/nginx`) serving a folder read-only with a
//! generated config in a folder of its own: the one starter the benches (`bench fetch`,
//! `bench lan`, run inside a network namespace there) and the fetch tests (which include
//! this file with `#[path]`) use. Standard library only, so both crates can build it.
//!
//! Known gap: waiting until it answers is the caller's (a loopback connect here, a
//! fixed pause inside a namespace).

use std::fs;
use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nginx binary of Debian's nginx-light.
pub const PROGRAM: &str = "/usr/sbin/nginx";

/// What the generated config says beyond serving `root`.
#[derive(Default)]
pub struct Config<'a> {
    /// `listen` value: `127.0.0.1:PORT`, with ` ssl` after it for HTTPS.
    pub listen: &'a str,
    /// Log `$body_bytes_sent` of every request to this file (none when `None`).
    pub bytes_log: Option<&'a Path>,
    /// More directives inside the `server` block (locations, certificates).
    pub server: &'a str,
}

/// A running nginx, killed on drop.
pub struct Nginx(Child);

impl Nginx {
    /// Writes `dir/nginx.conf` (pid, error log and temp paths in `dir`) and runs `cmd` on
    /// it: `Command::new(PROGRAM)`, or a wrapper ending in it (`ip netns exec NS nginx`).
    pub fn spawn(mut cmd: Command, dir: &Path, root: &Path, cfg: &Config) -> io::Result<Nginx> {
        fs::create_dir_all(dir)?;
        let d = dir.display();
        let log = match cfg.bytes_log {
            Some(p) => format!(
                " log_format bytes '$body_bytes_sent';\n access_log {} bytes;\n",
                p.display()
            ),
            None => " access_log off;\n".to_owned(),
        };
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n{log} sendfile on;\n default_type application/octet-stream;\n\
             client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
             server {{\n  listen {};\n  root {};\n{}\n }}\n}}\n",
            cfg.listen,
            root.display(),
            cfg.server
        );
        fs::write(dir.join("nginx.conf"), conf)?;
        let child = cmd
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("starting {PROGRAM} (apt-get install nginx-light): {e}"),
                )
            })?;
        Ok(Nginx(child))
    }

    /// Waits (up to 10 s) until `127.0.0.1:port` accepts a connection.
    pub fn wait_loopback(&mut self, port: u16) -> io::Result<()> {
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = self.0.try_wait() {
                return Err(io::Error::other(format!("nginx exited: {st}")));
            }
            if t.elapsed() > Duration::from_secs(10) {
                return Err(io::Error::other("nginx did not start within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
