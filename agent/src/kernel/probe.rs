//! What this kernel can do, found once at start in a scratch network namespace so that
//! probing changes nothing anyone can see.

use netlink_packet_core::DefaultNla;
use netlink_packet_route::{
    tc::{TcAttribute, TcHandle, TcMessage},
    RouteNetlinkMessage,
};
use nix::sched::{unshare, CloneFlags};

use super::{link, qdisc, rtnl, KernelError};

#[derive(Clone, Debug)]
pub struct Features {
    /// netem and htb qdiscs and ifb devices: what delay faults need.
    pub netem: Result<(), String>,
}

pub fn probe() -> Features {
    let scratch = std::thread::spawn(|| -> Result<(), String> {
        // The thread's own namespace dies with it.
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("cannot make a scratch namespace: {e}"))?;
        fn named(what: &'static str) -> impl Fn(KernelError) -> String {
            move |e| format!("{what}: {e}")
        }
        qdisc::install_root(1).map_err(named("the htb qdisc (sch_htb)"))?;
        qdisc_works("netem", 1).map_err(named("the netem qdisc (sch_netem)"))?;
        link::create_ifb(&link::ifb_name(0))
            .map(drop)
            .map_err(named("ifb devices"))
    });
    let netem = scratch
        .join()
        .unwrap_or_else(|_| Err("the probe thread panicked".to_owned()));
    Features { netem }
}

/// Adds a qdisc of `kind` as the root of the scratch namespace's lo.
fn qdisc_works(kind: &str, ifindex: u32) -> Result<(), KernelError> {
    let mut message = TcMessage::with_index(ifindex as i32);
    message.header.parent = TcHandle::from(u32::MAX);
    message.header.handle = TcHandle::from(0x0001_0000);
    message.attributes.push(TcAttribute::Kind(kind.to_owned()));
    if kind == "netem" {
        // netem needs its qopt; 1000 packets, no impairment.
        let mut qopt = vec![0u8; 24];
        qopt[4..8].copy_from_slice(&1000u32.to_ne_bytes());
        message
            .attributes
            .push(TcAttribute::Other(DefaultNla::new(2, qopt)));
    }
    rtnl::change_one(
        "probe qdisc",
        RouteNetlinkMessage::NewQueueDiscipline(message),
        rtnl::NLM_F_CREATE | rtnl::NLM_F_REPLACE,
    )
}
