//! Watch roots as things that can go away: a root's own identity (device,
//! inode, whether it is a mount point), the checks that tell a share that is
//! away from files that are gone, and the registry of unavailable roots that
//! the watch stage fills and the upload workers and monitoring read.

pub mod mountinfo;
