//! The nodes' room ([`crate::room`]), listed for the looks at waiting shards that need it
//! and shared by every AnalysisJob for [`requeue::NODE_ROOM_MAX_AGE`]: a full cluster
//! with hundreds of waiting fleets costs one node LIST a minute, not one per fleet.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::sync::Mutex;

use super::requeue;
use crate::room::NodeRoom;

/// The last list of the nodes' room and when it was taken.
#[derive(Default)]
pub struct NodeRooms {
    last: Mutex<Option<(Instant, Arc<[NodeRoom]>)>>,
}

impl NodeRooms {
    /// The nodes' room, listed again (from the apiserver's watch cache) when the last
    /// list is older than [`requeue::NODE_ROOM_MAX_AGE`]. Callers that ask while a list
    /// runs wait for it and share it.
    pub async fn get(&self, client: &Client) -> Result<Arc<[NodeRoom]>, kube::Error> {
        let mut last = self.last.lock().await;
        if let Some((at, rooms)) = last.as_ref()
            && at.elapsed() < requeue::NODE_ROOM_MAX_AGE
        {
            return Ok(rooms.clone());
        }
        let nodes: Api<Node> = Api::all(client.clone());
        let list = nodes.list(&ListParams::default().match_any()).await?;
        let rooms: Arc<[NodeRoom]> = list.items.iter().map(NodeRoom::of).collect();
        *last = Some((Instant::now(), rooms.clone()));
        Ok(rooms)
    }
}
