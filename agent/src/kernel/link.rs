//! Network devices faultd creates: the ifb that carries a device's ingress delay faults.

use futures::TryStreamExt;
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::LinkIfb;

use super::{rtnl::Netlink, KernelError};

/// Name of the ifb faultd creates for ingress faults on device `ifindex`: our prefix, never
/// the kernel's own `ifb0`/`ifb1`.
pub fn ifb_name(ifindex: u32) -> String {
    format!("flifb{ifindex}")
}

fn netlink(op: &'static str) -> impl Fn(rtnetlink::Error) -> KernelError {
    move |source| KernelError::Netlink { op, source }
}

/// Creates ifb `name`, brings it up, and returns its ifindex.
pub async fn create_ifb(nl: &Netlink, name: &str) -> Result<u32, KernelError> {
    let handle = nl.handle();
    handle
        .link()
        .add(LinkIfb::new(name).up().build())
        .execute()
        .await
        .map_err(netlink("create ifb"))?;
    let link = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .map_err(netlink("find ifb"))?;
    link.map(|l| l.header.index)
        .ok_or(KernelError::DeviceNotFound {
            dev: name.to_owned(),
        })
}

/// Every device of the namespace, as (ifindex, name).
pub async fn list_links(nl: &Netlink) -> Result<Vec<(u32, String)>, KernelError> {
    let links: Vec<_> = nl
        .handle()
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(netlink("dump links"))?;
    Ok(links
        .into_iter()
        .filter_map(|link| {
            let name = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            })?;
            Some((link.header.index, name))
        })
        .collect())
}

/// Whether `name` is an ifb faultd created.
pub fn is_our_ifb(name: &str) -> bool {
    name.strip_prefix("flifb")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
}

pub async fn delete_link(nl: &Netlink, ifindex: u32) -> Result<(), KernelError> {
    nl.handle()
        .link()
        .del(ifindex)
        .execute()
        .await
        .map_err(netlink("delete link"))
}
