//! Network devices faultd creates: the ifb that carries ingress delay faults.

use futures::TryStreamExt;
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::LinkIfb;

use super::{rtnl, KernelError};

/// Name of the ifb faultd creates for ingress faults on device `ifindex`: our prefix, never
/// the kernel's own `ifb0`/`ifb1`.
pub fn ifb_name(ifindex: u32) -> String {
    format!("flifb{ifindex}")
}

/// Creates ifb `name`, brings it up, and returns its ifindex.
pub fn create_ifb(name: &str) -> Result<u32, KernelError> {
    let name = name.to_owned();
    rtnl::run("create ifb", |handle| async move {
        handle
            .link()
            .add(LinkIfb::new(&name).up().build())
            .execute()
            .await?;
        let link = handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await?;
        Ok(link.map(|l| l.header.index))
    })?
    .ok_or(KernelError::DeviceNotFound {
        dev: "new ifb".to_owned(),
    })
}

/// Every device of the thread's namespace, as (ifindex, name).
pub fn list_links() -> Result<Vec<(u32, String)>, KernelError> {
    rtnl::run("dump links", |handle| async move {
        let links: Vec<_> = handle.link().get().execute().try_collect().await?;
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
    })
}

/// Whether `name` is an ifb faultd created.
pub fn is_our_ifb(name: &str) -> bool {
    name.strip_prefix("flifb")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
}

pub fn delete_link(ifindex: u32) -> Result<(), KernelError> {
    rtnl::run("delete link", |handle| async move {
        handle.link().del(ifindex).execute().await
    })
}
