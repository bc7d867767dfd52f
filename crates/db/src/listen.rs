//! `LISTEN` on a dedicated connection: the schema cache reloads on `NOTIFY pgrst`.
use futures::{stream, StreamExt};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::DbError;

/// Notifications of one channel. Receiving `None` means the connection was lost.
pub struct Listener {
    _client: Client,
    pub rx: mpsc::Receiver<String>,
}

/// Listens on `channel` and forwards each notification's payload.
pub async fn listen(url: &str, channel: &str) -> Result<Listener, DbError> {
    let (client, mut conn) = tokio_postgres::connect(url, NoTls).await?;
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
