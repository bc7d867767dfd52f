//! A logical replication stream: `START_REPLICATION SLOT … LOGICAL` over a walsender
//! connection (`replication=database`), the way `pg_recvlogical` reads a slot.
//!
//! tokio-postgres 0.7 has no replication protocol, and the SQL functions
//! (`pg_logical_slot_peek_changes`) decode the WAL again from the slot's `restart_lsn` on
//! every call: up to ~15 s of WAL per poll on a busy database (the running-transactions
//! record that moves `restart_lsn` is written that rarely). A walsender decodes each record
//! once and pushes the output as it commits.
//!
//! The connection comes from [`crate::pipe::PipeConn`] (same startup and authentication);
//! this module adds the COPY BOTH sub-protocol: `XLogData` and keepalives in, standby status
//! updates out.
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes};
use postgres_protocol::message::{backend::Message, frontend};

use crate::pipe::{pg_error, protocol, unavailable, PipeConn};
use crate::{quote_ident, quote_literal, DbError};

/// One message of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplMessage {
    /// Output of the decoding plugin for the WAL record at `start` (`pg_lsn` as u64).
    Data { start: u64, end: u64, data: Bytes },
    /// The server's WAL end; `reply`: it wants a status update now.
    Keepalive { end: u64, reply: bool },
}

/// A started logical replication stream.
pub struct LogicalStream {
    conn: PipeConn,
}

/// Microseconds since 2000-01-01, PostgreSQL's clock in replication messages.
fn pg_now() -> i64 {
    const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.as_micros() as i64 - (PG_EPOCH_UNIX_SECS as i64) * 1_000_000
}

/// `START_REPLICATION SLOT "slot" LOGICAL 0/0 ("k" 'v', ...)`: from the slot's confirmed
/// position.
pub fn start_command(slot: &str, options: &[(&str, &str)]) -> String {
    let mut sql = format!("START_REPLICATION SLOT {} LOGICAL 0/0", quote_ident(slot));
    if !options.is_empty() {
        let opts: Vec<String> = options
            .iter()
            .map(|(k, v)| format!("{} {}", quote_ident(k), quote_literal(v)))
            .collect();
        sql.push_str(&format!(" ({})", opts.join(", ")));
    }
    sql
}

/// The tag and whole length (tag included) of the first message in `buf`, once all of it
/// has arrived.
fn frame(buf: &bytes::BytesMut) -> Result<Option<(u8, usize)>, DbError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len < 4 {
        return Err(protocol("bad message length from PostgreSQL"));
    }
    Ok((buf.len() > len).then_some((buf[0], len + 1)))
}

/// Parses one CopyData payload of the stream.
fn parse_copy_data(mut b: Bytes) -> Result<Option<ReplMessage>, DbError> {
    if b.is_empty() {
        return Err(protocol("empty CopyData in the replication stream"));
    }
    match b.get_u8() {
        b'w' => {
            if b.len() < 24 {
                return Err(protocol("short XLogData"));
            }
            let start = b.get_u64();
            let end = b.get_u64();
            let _clock = b.get_i64();
            Ok(Some(ReplMessage::Data {
                start,
                end,
                data: b,
            }))
        }
        b'k' => {
            if b.len() < 17 {
                return Err(protocol("short keepalive"));
            }
            let end = b.get_u64();
            let _clock = b.get_i64();
            let reply = b.get_u8() == 1;
            Ok(Some(ReplMessage::Keepalive { end, reply }))
        }
        _ => Ok(None),
    }
}

impl LogicalStream {
    /// Connects as `config`'s user with `replication=database` and starts streaming `slot`
    /// from its confirmed position with the plugin's `options`.
    pub async fn start(
        config: &tokio_postgres::Config,
        slot: &str,
        options: &[(&str, &str)],
    ) -> Result<LogicalStream, DbError> {
        let mut conn = PipeConn::connect_with(config, &[("replication", "database")]).await?;
        frontend::query(&start_command(slot, options), &mut conn.wbuf).map_err(unavailable)?;
        conn.flush().await?;
        loop {
            match frame(&conn.rbuf)? {
                // CopyBothResponse: not a message postgres-protocol parses.
                Some((b'W', len)) => {
                    conn.rbuf.advance(len);
                    return Ok(LogicalStream { conn });
                }
                Some(_) => match Message::parse(&mut conn.rbuf).map_err(unavailable)? {
                    Some(Message::ErrorResponse(b)) => return Err(pg_error(&mut b.fields())),
                    Some(Message::NoticeResponse(_) | Message::ParameterStatus(_)) => continue,
                    _ => return Err(protocol("unexpected answer to START_REPLICATION")),
                },
                None => {}
            }
            if conn
                .stream
                .read_buf(&mut conn.rbuf)
                .await
                .map_err(unavailable)?
                == 0
            {
                return Err(unavailable("PostgreSQL closed the replication connection"));
            }
        }
    }

    /// The next message already received, without waiting.
    pub fn next_buffered(&mut self) -> Result<Option<ReplMessage>, DbError> {
        loop {
            let buf = &mut self.conn.rbuf;
            let Some((tag, len)) = frame(buf)? else {
                return Ok(None);
            };
            match tag {
                b'd' => {
                    let mut f = buf.split_to(len).freeze();
                    f.advance(5);
                    if let Some(m) = parse_copy_data(f)? {
                        return Ok(Some(m));
                    }
                }
                b'E' => {
                    return match Message::parse(buf).map_err(unavailable)? {
                        Some(Message::ErrorResponse(b)) => Err(pg_error(&mut b.fields())),
                        _ => Err(protocol("bad error message in the replication stream")),
                    };
                }
                b'c' => return Err(unavailable("PostgreSQL ended the replication stream")),
                // Notices and parameter changes: skipped.
                _ => buf.advance(len),
            }
        }
    }

    /// The next message, waiting for it. Cancel-safe: nothing received is lost when the
    /// future is dropped.
    pub async fn next(&mut self) -> Result<ReplMessage, DbError> {
        loop {
            if let Some(m) = self.next_buffered()? {
                return Ok(m);
            }
            self.conn.rbuf.reserve(8192);
            if self
                .conn
                .stream
                .read_buf(&mut self.conn.rbuf)
                .await
                .map_err(unavailable)?
                == 0
            {
                return Err(unavailable("PostgreSQL closed the replication connection"));
            }
        }
    }

    /// Tells the server everything up to `lsn` is handled: the slot's confirmed position
    /// moves there (and with it, at the next running-transactions record, the WAL it keeps).
    pub async fn confirm(&mut self, lsn: u64) -> Result<(), DbError> {
        let mut body = bytes::BytesMut::with_capacity(34);
        body.put_u8(b'r');
        body.put_u64(lsn);
        body.put_u64(lsn);
        body.put_u64(lsn);
        body.put_i64(pg_now());
        body.put_u8(0);
        let wbuf = &mut self.conn.wbuf;
        wbuf.put_u8(b'd');
        wbuf.put_u32(4 + body.len() as u32);
        wbuf.put_slice(&body);
        self.conn.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_command_quotes() {
        assert_eq!(
            start_command("s\"x", &[("add-tables", "a.b,c.d'e")]),
            "START_REPLICATION SLOT \"s\"\"x\" LOGICAL 0/0 (\"add-tables\" 'a.b,c.d''e')"
        );
    }

    #[test]
    fn copy_data_parses() {
        let mut b = bytes::BytesMut::new();
        b.put_u8(b'w');
        b.put_u64(0x1_0000_0010);
        b.put_u64(0x1_0000_0020);
        b.put_i64(7);
        b.put_slice(b"{\"action\":\"B\"}");
        assert_eq!(
            parse_copy_data(b.freeze()).unwrap(),
            Some(ReplMessage::Data {
                start: 0x1_0000_0010,
                end: 0x1_0000_0020,
                data: Bytes::from_static(b"{\"action\":\"B\"}")
            })
        );
        let mut k = bytes::BytesMut::new();
        k.put_u8(b'k');
        k.put_u64(42);
        k.put_i64(0);
        k.put_u8(1);
        assert_eq!(
            parse_copy_data(k.freeze()).unwrap(),
            Some(ReplMessage::Keepalive {
                end: 42,
                reply: true
            })
        );
        assert!(parse_copy_data(Bytes::from_static(b"w1")).is_err());
    }

    #[test]
    fn frames_wait_for_their_whole_length() {
        let mut b = bytes::BytesMut::from(&b"d\0\0\0\x06"[..]);
        assert_eq!(frame(&b).unwrap(), None);
        b.put_slice(b"ab");
        assert_eq!(frame(&b).unwrap(), Some((b'd', 7)));
        assert!(frame(&bytes::BytesMut::from(&b"d\0\0\0\x02"[..])).is_err());
    }
}
