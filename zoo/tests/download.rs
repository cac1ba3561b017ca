//! Downloader against a real HTTP server on 127.0.0.1 serving fixture archives built
//! here from synthetic files (no machine here reaches the real URL:
//! docs/design-notes.md#data).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use md5::{Digest as _, Md5};
use tpsnet_zoo::cifar::{self, DIR_NAME, ExpectedFile};
use tpsnet_zoo::download::{DownloadError, DownloadOptions, download_cifar10};

/// How the server answers every request.
#[derive(Clone)]
enum Reply {
    Ok(Vec<u8>),
    Status(u16),
    /// Announces `claimed` bytes, sends `body`, then closes the connection.
    CutOff {
        body: Vec<u8>,
        claimed: usize,
    },
}

struct Server {
    url: String,
    hits: Arc<AtomicUsize>,
}

/// Serves `reply` to every connection, one at a time, on a thread left running until
/// the test process exits (each test has its own port).
fn serve(reply: Reply) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/~kriz/cifar-10-binary.tar.gz",
        listener.local_addr().unwrap()
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = answer(stream, &reply);
        }
    });
    Server { url, hits }
}

fn answer(mut stream: TcpStream, reply: &Reply) -> std::io::Result<()> {
    // Read the request head; its content does not matter.
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 && line != "\r\n" {
        line.clear();
    }
    let head = |status: &str, len: usize| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/gzip\r\nContent-Length: {len}\r\n\
             Connection: close\r\n\r\n"
        )
    };
    match reply {
        Reply::Ok(body) => {
            stream.write_all(head("200 OK", body.len()).as_bytes())?;
            stream.write_all(body)?;
        }
        Reply::Status(code) => {
            let body = b"no such file";
            stream.write_all(head(&format!("{code} Not Found"), body.len()).as_bytes())?;
            stream.write_all(body)?;
        }
        Reply::CutOff { body, claimed } => {
            stream.write_all(head("200 OK", *claimed).as_bytes())?;
            stream.write_all(body)?;
        }
    }
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// Synthetic stand-ins for the release's files (a few records each, not CIFAR data).
fn fixture_files() -> Vec<(String, Vec<u8>)> {
    let batch = |seed: u8| -> Vec<u8> {
        (0..3 * cifar::RECORD_BYTES)
            .map(|i| {
                if i % cifar::RECORD_BYTES == 0 {
                    (i / cifar::RECORD_BYTES) as u8
                } else {
                    (i as u8).wrapping_mul(31).wrapping_add(seed)
                }
            })
            .collect()
    };
    let mut files: Vec<(String, Vec<u8>)> = cifar::TRAIN_FILES
        .iter()
        .enumerate()
        .map(|(i, name)| (name.to_string(), batch(i as u8)))
        .collect();
    files.push((cifar::TEST_FILE.into(), batch(99)));
    files.push((
        cifar::META_FILE.into(),
        tpsnet_zoo::manifest::CIFAR10_CLASSES
            .join("\n")
            .into_bytes(),
    ));
    files
}

/// A tar.gz with `cifar-10-batches-bin/<name>` for each file, like the official one.
fn archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    tar.append_data(&mut dir, format!("{DIR_NAME}/"), std::io::empty())
        .unwrap();
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        tar.append_data(&mut header, format!("{DIR_NAME}/{name}"), bytes.as_slice())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn expected(files: &[(String, Vec<u8>)]) -> Vec<ExpectedFile> {
    files
        .iter()
        .map(|(name, bytes)| ExpectedFile {
            name: name.clone(),
            md5: md5_hex(bytes),
            size: Some(bytes.len() as u64),
        })
        .collect()
}

fn options(server: &Server, archive: &[u8], cache: &Path) -> DownloadOptions {
    DownloadOptions {
        url: server.url.clone(),
        md5: md5_hex(archive),
        cache_dir: cache.to_path_buf(),
        progress: false,
        expected_files: expected(&fixture_files()),
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// After a failure the cache holds neither a dataset folder nor any temporary file.
fn assert_clean(cache: &Path) {
    assert_eq!(
        listing(cache),
        Vec::<String>::new(),
        "left behind in {cache:?}"
    );
}

fn cache_dir(tmp: &tempfile::TempDir) -> PathBuf {
    // A folder that does not exist yet: the downloader must create it.
    tmp.path().join("cache").join("tpsnet-zoo")
}

#[test]
fn good_archive_is_installed_once() {
    let files = fixture_files();
    let body = archive(&files);
    let server = serve(Reply::Ok(body.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_dir(&tmp);
    let opts = options(&server, &body, &cache);

    let dir = download_cifar10(&opts).unwrap();
    assert_eq!(dir, cache.join(DIR_NAME));
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert_eq!(listing(&cache), [DIR_NAME]);
    for (name, bytes) in &files {
        assert_eq!(&fs::read(dir.join(name)).unwrap(), bytes, "{name}");
    }
    let test = cifar::parse_records(
        &dir.join(cifar::TEST_FILE),
        &fs::read(dir.join(cifar::TEST_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(test.labels, [0, 1, 2]);

    // Already there and intact: no request at all.
    assert_eq!(download_cifar10(&opts).unwrap(), dir);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    // A damaged copy is replaced by a fresh, verified one.
    let victim = dir.join(cifar::TRAIN_FILES[2]);
    let mut bytes = fs::read(&victim).unwrap();
    bytes[100] ^= 0xff;
    fs::write(&victim, bytes).unwrap();
    assert_eq!(download_cifar10(&opts).unwrap(), dir);
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    assert_eq!(listing(&cache), [DIR_NAME]);
    cifar::verify_files(&dir, &opts.expected_files).unwrap();
}

#[test]
fn wrong_archive_md5_is_rejected() {
    let body = archive(&fixture_files());
    let server = serve(Reply::Ok(body.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_dir(&tmp);
    let mut opts = options(&server, &body, &cache);
    opts.md5 = "c32a1d4ab5d03f1284b67883e8d87530".into();

    let err = download_cifar10(&opts).unwrap_err();
    assert!(matches!(&err, DownloadError::Md5Mismatch { actual, .. } if *actual == md5_hex(&body)));
    let msg = err.to_string();
    assert!(msg.contains(&server.url) && msg.contains("c32a1d4ab5d03f1284b67883e8d87530"));
    assert_clean(&cache);
}

#[test]
fn truncated_download_is_rejected() {
    let body = archive(&fixture_files());
    let server = serve(Reply::CutOff {
        body: body[..body.len() / 2].to_vec(),
        claimed: body.len(),
    });
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_dir(&tmp);
    let err = download_cifar10(&options(&server, &body, &cache)).unwrap_err();
    assert!(
        matches!(err, DownloadError::Truncated { received, expected, .. }
            if received == (body.len() / 2) as u64 && expected == body.len() as u64),
        "{err}"
    );
    assert!(err.to_string().contains(&server.url));
    assert_clean(&cache);
}

#[test]
fn corrupt_gzip_is_rejected() {
    let mut body = archive(&fixture_files());
    // Damage the compressed stream, not the gzip header; the md5 is of the damaged bytes,
    // so only the extraction can notice.
    let mid = body.len() / 2;
    for b in &mut body[mid..mid + 16] {
        *b ^= 0x5a;
    }
    let server = serve(Reply::Ok(body.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_dir(&tmp);
    let err = download_cifar10(&options(&server, &body, &cache)).unwrap_err();
    assert!(matches!(err, DownloadError::BadArchive { .. }), "{err}");
    assert!(err.to_string().contains(&server.url));
    assert_clean(&cache);

    // Not gzip at all.
    let junk = b"<html>this is a login page, not an archive</html>".to_vec();
    let server = serve(Reply::Ok(junk.clone()));
    let err = download_cifar10(&options(&server, &junk, &cache)).unwrap_err();
    assert!(matches!(err, DownloadError::BadArchive { .. }), "{err}");
    assert_clean(&cache);
}

#[test]
fn archive_lacking_a_file_is_rejected() {
    let mut files = fixture_files();
    files.retain(|(name, _)| name != cifar::TEST_FILE);
    let body = archive(&files);
    let server = serve(Reply::Ok(body.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_dir(&tmp);
    let err = download_cifar10(&options(&server, &body, &cache)).unwrap_err();
    assert!(
        matches!(&err, DownloadError::MissingFile { name, .. } if name.ends_with(cifar::TEST_FILE)),
        "{err}"
    );
    assert!(err.to_string().contains(cifar::TEST_FILE));
    assert_clean(&cache);
}

#[test]
fn extracted_file_with_wrong_md5_is_rejected() {
    let mut files = fixture_files();
    files[1].1[10] ^= 1;
    let body = archive(&files);
    let server = serve(Reply::Ok(body.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_dir(&tmp);
    // `options` expects the undamaged fixture's md5s.
    let err = download_cifar10(&options(&server, &body, &cache)).unwrap_err();
    assert!(
        matches!(&err, DownloadError::BadFile { name, source: cifar::CifarError::Md5Mismatch { .. }, .. }
            if name == cifar::TRAIN_FILES[1]),
        "{err}"
    );
    assert!(err.to_string().contains(cifar::TRAIN_FILES[1]));
    assert_clean(&cache);
}

#[test]
fn http_404_is_rejected() {
    let server = serve(Reply::Status(404));
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_dir(&tmp);
    let err = download_cifar10(&options(&server, b"", &cache)).unwrap_err();
    assert!(
        matches!(err, DownloadError::Status { status: 404, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("404") && msg.contains(&server.url) && msg.contains("CIFAR10_DIR"));
    assert_clean(&cache);
}

#[test]
fn refused_connection_is_reported() {
    // Bind then drop: the port is very likely closed for the short life of this test.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_dir(&tmp);
    let opts = DownloadOptions {
        url: format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz"),
        cache_dir: cache.clone(),
        progress: false,
        ..DownloadOptions::default()
    };
    let err = download_cifar10(&opts).unwrap_err();
    assert!(matches!(err, DownloadError::Http { .. }), "{err}");
    assert!(err.to_string().contains(&opts.url));
    assert_clean(&cache);
}

#[test]
fn defaults_are_the_official_release() {
    let opts = DownloadOptions::default();
    assert_eq!(
        opts.url,
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    );
    assert_eq!(opts.md5, "c32a1d4ab5d03f1284b67883e8d87530");
    assert_eq!(opts.expected_files, cifar::official_files());
    assert_eq!(opts.cache_dir, tpsnet_zoo::download::default_cache_dir());
    if std::env::var_os("TPSNET_CACHE").is_none() {
        assert!(opts.cache_dir.ends_with("tpsnet-zoo"));
    }
}
