//! A payload-log sink for tests: a plain HTTP/1.1 server that records the CloudEvents batches it is sent (or,
//! told not to answer, holds every request forever, like a hung sink).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::Value;

/// One POST the sink received.
pub struct Batch {
    /// Its `Content-Type`.
    pub content_type: String,
    /// The events of its JSON array.
    pub events: Vec<Value>,
}

/// An HTTP/1.1 sink that records every batch POSTed to `/events` and answers 200, or (`answer: false`) accepts
/// connections and reads requests but never answers.
pub struct Sink {
    addr: SocketAddr,
    received: Arc<(Mutex<Vec<Batch>>, Condvar)>,
}

impl Sink {
    /// Listens on `ip` (loopback for a server on this machine, the cluster's host address for pods), on a free
    /// port.
    pub fn start(ip: &str, answer: bool) -> anyhow::Result<Sink> {
        let listener = TcpListener::bind((ip, 0))?;
        let addr = listener.local_addr()?;
        let received = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let shared = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                // One thread per connection; it ends when the server closes the connection.
                std::thread::spawn(move || {
                    if answer {
                        let _ = serve_connection(stream, &shared);
                    } else {
                        let mut stream = stream;
                        let mut sink = [0u8; 8192];
                        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                    }
                });
            }
        });
        Ok(Sink { addr, received })
    }

    /// The URL to give `--log-url` or `monitoring.logging.url`.
    pub fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    /// Waits up to `wait` until the batches received hold at least `records` events, each batch posted as
    /// `content_type`; returns all of them.
    pub fn wait_for(
        &self,
        records: usize,
        wait: Duration,
        content_type: &str,
    ) -> anyhow::Result<Vec<Value>> {
        let (lock, ready) = &*self.received;
        let guard = lock.lock().map_err(|_| anyhow::anyhow!("sink poisoned"))?;
        let count = |b: &Vec<Batch>| b.iter().map(|b| b.events.len()).sum::<usize>();
        let (guard, timeout) = ready
            .wait_timeout_while(guard, wait, |b| count(b) < records)
            .map_err(|_| anyhow::anyhow!("sink poisoned"))?;
        ensure!(
            !timeout.timed_out(),
            "the sink received {} of {records} records in {wait:?}",
            count(&guard)
        );
        for batch in guard.iter() {
            ensure!(
                batch.content_type == content_type,
                "batch posted as {:?}",
                batch.content_type
            );
        }
        Ok(guard.iter().flat_map(|b| b.events.clone()).collect())
    }
}

/// Read requests off one keep-alive connection, record each JSON batch, answer 200.
fn serve_connection(
    stream: TcpStream,
    shared: &(Mutex<Vec<Batch>>, Condvar),
) -> anyhow::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        ensure!(line.starts_with("POST /events "), "request line {line:?}");
        let mut headers = BTreeMap::new();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .context("no content-length")?
            .parse()?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let events: Vec<Value> = serde_json::from_slice(&body)?;
        let (lock, ready) = shared;
        lock.lock()
            .map_err(|_| anyhow::anyhow!("sink poisoned"))?
            .push(Batch {
                content_type: headers.get("content-type").cloned().unwrap_or_default(),
                events,
            });
        ready.notify_all();
        writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")?;
    }
}
