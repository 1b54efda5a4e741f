//! A full disk under the broker: the embedded engine's injected ENOSPC
//! (`engine::embedded::fault`), served in-process over loopback gRPC.

use std::sync::Arc;

use crate::engine::embedded::fault_tests::{fill_disk_and_free, open};
use crate::engine::embedded::FsyncPolicy;
use crate::engine::Engine;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_broker_fails_writes_clearly_and_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Engine> = open(dir.path(), FsyncPolicy::Batch);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(super::serve_on(engine, listener, Default::default(), async move {
        let _ = stopped.await;
    }));
    let client =
        crate::client::Client::connect(&format!("grpc://{addr}"), &crate::options::Options::new()).await.unwrap();
    fill_disk_and_free(dir.path(), &**client.engine()).await;
    drop(client);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
