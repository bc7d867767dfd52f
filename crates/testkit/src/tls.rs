//! A PostgreSQL cluster of its own that speaks TLS, and the certificates for it (made with
//! the `openssl` command line): for clients that must reach a database over TLS, such as
//! `agencyflow import supabase --from '...?sslmode=verify-full&sslrootcert=...'`.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;

use agencyflow_db::{ClusterOptions, EmbeddedCluster};

/// A CA (certificate and key, PEM files in `dir`) that signs server certificates.
pub struct TestCa {
    pub cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// A new self-signed CA (P-256) named `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let (cert, key) = (format!("{name}.crt"), format!("{name}.key"));
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &key,
                "-out",
                &cert,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        TestCa {
            cert: dir.join(cert),
            key: dir.join(key),
        }
    }

    /// A server certificate for the DNS names `names`, signed by this CA: (cert, key) PEM.
    pub fn server_cert(&self, names: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={}", names[0]),
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        let san = names
            .iter()
            .map(|n| format!("DNS:{n}"))
            .collect::<Vec<_>>()
            .join(",");
        std::fs::write(
            d.join("ext.cnf"),
            format!("subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n"),
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                self.cert.to_str().unwrap(),
                "-CAkey",
                self.key.to_str().unwrap(),
                "-set_serial",
                "1",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "server.crt",
            ],
        );
        (
            std::fs::read(d.join("server.crt")).unwrap(),
            std::fs::read(d.join("server.key")).unwrap(),
        )
    }
}

/// A throwaway cluster with `ssl = on`; its `postgres` superuser logs in over TCP with a
/// password (SCRAM), over the Unix socket without. Stopped when dropped.
pub struct TlsCluster {
    port: u16,
    socket_dir: PathBuf,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TlsCluster {
    /// Starts it with the server certificate `cert` and key `key` (PEM) and sets the
    /// superuser's `password`.
    pub async fn start(cert: &[u8], key: &[u8], password: &str) -> TlsCluster {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        std::fs::create_dir(&tls).unwrap();
        std::fs::write(tls.join("server.crt"), cert).unwrap();
        std::fs::write(tls.join("server.key"), key).unwrap();
        // PostgreSQL refuses a key others may read; running as root, the cluster runs as
        // `postgres`, which must own the files and reach them.
        std::fs::set_permissions(
            tls.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        agencyflow_db::cluster::chown_to_cluster_user(&tls).unwrap();
        let opts = ClusterOptions {
            data_dir: dir.path().join("cluster"),
            bin_dir: None,
            port: None,
            ephemeral: true,
            settings: vec![
                ("ssl".into(), "on".into()),
                (
                    "ssl_cert_file".into(),
                    tls.join("server.crt").display().to_string(),
                ),
                (
                    "ssl_key_file".into(),
                    tls.join("server.key").display().to_string(),
                ),
            ],
        };
        // The postmaster dies with the thread that started it (PR_SET_PDEATHSIG): a thread
        // of its own keeps it until the drop.
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || match EmbeddedCluster::start(&opts) {
            Ok(c) => {
                ready_tx
                    .send(Ok((c.port(), c.socket_dir().to_path_buf())))
                    .unwrap();
                let _ = stop_rx.recv();
                drop(c);
            }
            Err(e) => ready_tx.send(Err(e.to_string())).unwrap(),
        });
        let (port, socket_dir) = tokio::task::spawn_blocking(move || ready_rx.recv().unwrap())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("starting the TLS cluster: {e}"));
        let cluster = TlsCluster {
            port,
            socket_dir,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        };
        cluster
            .superuser("postgres")
            .await
            .batch_execute(&format!("alter role postgres password '{password}'"))
            .await
            .unwrap();
        cluster
    }

    /// The TCP port (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A superuser client over the Unix socket.
    pub async fn superuser(&self, dbname: &str) -> agencyflow_db::tokio_postgres::Client {
        agencyflow_db::connect_one(&format!(
            "host={} port={} user=postgres dbname={dbname}",
            self.socket_dir.display(),
            self.port
        ))
        .await
        .unwrap()
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
