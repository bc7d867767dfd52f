//! `LISTEN` on a dedicated connection: the schema cache reloads on `NOTIFY pgrst`.
use std::str::FromStr;
use std::time::Duration;

use futures::{stream, StreamExt};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::DbError;

/// Notifications of one channel. Receiving `None` means the connection was lost.
pub struct Listener {
    _client: Client,
    pub rx: mpsc::Receiver<String>,
}

/// Bound on connecting (and authenticating) the listener: a database that is down or
/// starting must not keep the reloader waiting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Listens on `channel` and forwards each notification's payload.
pub async fn listen(url: &str, channel: &str) -> Result<Listener, DbError> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| DbError::Other(format!("invalid database URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let (client, mut conn) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| DbError::Unavailable("connecting the listener timed out".into()))??;
    let (tx, rx) = mpsc::channel(16);
    let mut messages = stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        while let Some(msg) = messages.next().await {
            match msg {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_string()).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "listen connection lost");
                    break;
                }
            }
        }
    });
    let quoted = format!("\"{}\"", channel.replace('"', "\"\""));
    client.batch_execute(&format!("listen {quoted}")).await?;
    Ok(Listener {
        _client: client,
        rx,
    })
}
