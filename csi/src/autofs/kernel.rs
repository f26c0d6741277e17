//! The kernel's autofs interface, version 5: the mount options, the packets the kernel
//! writes to the daemon's pipe, and the ioctls that answer them or take over a mount.
//!
//! The layouts follow `include/uapi/linux/auto_fs.h` and `auto_dev-ioctl.h`; this is the
//! one module of the plugin with `unsafe` code, each block limited to one ioctl(2) on a
//! file descriptor we own, with an argument of the size the request number encodes.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The protocol version we speak (minproto = maxproto = 5).
pub const PROTOCOL: u32 = 5;

/// `ioctl` type of every autofs request.
const AUTOFS_IOCTL: u8 = 0x93;

/// Packet type of a lookup of a missing name in an indirect mount.
pub const PACKET_MISSING_INDIRECT: i32 = 3;
/// Packet type asking the daemon to expire a name (never sent: we never ask for expiry).
pub const PACKET_EXPIRE_INDIRECT: i32 = 4;

/// Size of `struct autofs_v5_packet` on 64-bit Linux: the kernel writes one per lookup.
pub const PACKET_SIZE: usize = 304;
/// Offset of `name` in the packet.
const NAME_OFFSET: usize = 44;
/// `NAME_MAX + 1`.
const NAME_CAPACITY: usize = 256;

/// One request of the kernel: a process looked up `name` beneath the autofs mount of
/// device `dev`, and waits until the daemon answers `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The packet type (see `PACKET_*`).
    pub kind: i32,
    /// The wait-queue token to answer with READY or FAIL.
    pub token: u32,
    /// The autofs superblock's device, encoded like `st_dev` (`new_encode_dev`).
    pub dev: u32,
    /// The process that looked the name up.
    pub pid: u32,
    /// Its user id.
    pub uid: u32,
    /// The name looked up (a single path component, as bytes).
    pub name: Vec<u8>,
}

/// Why bytes read from the pipe are not a packet we can answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer bytes than a packet's header.
    #[error("short autofs packet of {0} bytes")]
    Short(usize),
    /// Another protocol version than the one we mounted with.
    #[error("autofs packet of protocol {0}, expected {PROTOCOL}")]
    Protocol(u32),
    /// A name length beyond the bytes read or `NAME_MAX`.
    #[error("autofs packet name of {0} bytes does not fit")]
    NameTooLong(usize),
}

impl Packet {
    /// Parses a packet as read from the pipe (one read returns one packet).
    pub fn parse(bytes: &[u8]) -> Result<Self, PacketError> {
        if bytes.len() < NAME_OFFSET + 1 {
            return Err(PacketError::Short(bytes.len()));
        }
        let u32_at = |offset: usize| {
            u32::from_ne_bytes([
                bytes[offset],
                bytes[offset + 1],
                bytes[offset + 2],
                bytes[offset + 3],
            ])
        };
        let version = u32_at(0);
        if version != PROTOCOL {
            return Err(PacketError::Protocol(version));
        }
        let length = u32_at(40) as usize;
        let available = bytes.len().saturating_sub(NAME_OFFSET).min(NAME_CAPACITY);
        if length >= available {
            return Err(PacketError::NameTooLong(length));
        }
        Ok(Self {
            kind: u32_at(4) as i32,
            token: u32_at(8),
            dev: u32_at(12),
            uid: u32_at(24),
            pid: u32_at(32),
            name: bytes[NAME_OFFSET..NAME_OFFSET + length].to_vec(),
        })
    }
}

/// `major:minor` of an encoded device number, as `/proc/self/mountinfo` writes it.
pub fn device_text(dev: u32) -> String {
    let major = (dev >> 8) & 0xfff;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    format!("{major}:{minor}")
}

/// The `data` argument of mount(2) for an indirect autofs mount served through the pipe
/// whose write end is `fd`, with `pgrp` as the daemon's process group.
pub fn mount_options(fd: i32, pgrp: i32) -> String {
    format!("fd={fd},pgrp={pgrp},minproto={PROTOCOL},maxproto={PROTOCOL},indirect")
}

/// The request numbers, as `nix` generates their calls.
#[allow(missing_docs)]
mod requests {
    use super::{AUTOFS_IOCTL, DevIoctl};

    nix::ioctl_write_int_bad!(ready, nix::request_code_none!(AUTOFS_IOCTL, 0x60));
    nix::ioctl_write_int_bad!(fail, nix::request_code_none!(AUTOFS_IOCTL, 0x61));
    nix::ioctl_none!(catatonic, AUTOFS_IOCTL, 0x62);
    nix::ioctl_read!(protocol_version, AUTOFS_IOCTL, 0x63, std::ffi::c_int);
    nix::ioctl_readwrite!(dev_open_mount, AUTOFS_IOCTL, 0x74, DevIoctl);
    nix::ioctl_readwrite!(dev_set_pipe, AUTOFS_IOCTL, 0x78, DevIoctl);
    nix::ioctl_readwrite!(dev_catatonic, AUTOFS_IOCTL, 0x79, DevIoctl);
}

/// Tells the kernel that the lookup `token` on the mount open as `root` is done.
pub fn ready(root: BorrowedFd<'_>, token: u32) -> io::Result<()> {
    // SAFETY: AUTOFS_IOC_READY takes the token by value; `root` is an open descriptor.
    unsafe { requests::ready(root.as_raw_fd(), token as std::ffi::c_int) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Tells the kernel that the lookup `token` failed: the waiting process gets ENOENT.
pub fn fail(root: BorrowedFd<'_>, token: u32) -> io::Result<()> {
    // SAFETY: as for `ready`.
    unsafe { requests::fail(root.as_raw_fd(), token as std::ffi::c_int) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Puts the mount into catatonic mode: every waiting process is released (with ENOENT),
/// and later lookups of missing names fail at once until a daemon takes the mount over.
pub fn catatonic(root: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: AUTOFS_IOC_CATATONIC takes no argument.
    unsafe { requests::catatonic(root.as_raw_fd()) }
        .map(drop)
        .map_err(io::Error::from)
}

/// The protocol version the mount open as `root` speaks.
pub fn protocol_version(root: BorrowedFd<'_>) -> io::Result<u32> {
    let mut version: std::ffi::c_int = 0;
    // SAFETY: AUTOFS_IOC_PROTOVER writes one int through the pointer, which is valid.
    unsafe { requests::protocol_version(root.as_raw_fd(), &mut version) }
        .map_err(io::Error::from)?;
    Ok(version as u32)
}

/// `struct autofs_dev_ioctl` without its trailing path: 16 bytes of header and an 8-byte
/// argument union.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct DevIoctl {
    ver_major: u32,
    ver_minor: u32,
    size: u32,
    ioctlfd: i32,
    arg1: u32,
    arg2: u32,
}

/// Size of `struct autofs_dev_ioctl` (the size encoded in the request numbers).
const DEV_IOCTL_SIZE: usize = size_of::<DevIoctl>();
const _: () = assert!(DEV_IOCTL_SIZE == 24);

/// Version of the `/dev/autofs` control interface we speak (1.0 works with every kernel
/// that has it).
const DEV_IOCTL_VERSION: (u32, u32) = (1, 0);

/// A request buffer: the header followed by a NUL-terminated path, 8-byte aligned.
struct DevRequest {
    words: Vec<u64>,
}

impl DevRequest {
    fn new(ioctlfd: i32, arg1: u32, path: Option<&Path>) -> io::Result<Self> {
        let path = path
            .map(|p| CString::new(p.as_os_str().as_bytes()))
            .transpose()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))?;
        let path_bytes = path.as_ref().map_or(&[][..], |p| p.as_bytes_with_nul());
        let size = DEV_IOCTL_SIZE + path_bytes.len();
        let mut words = vec![0u64; size.div_ceil(8)];
        let header = DevIoctl {
            ver_major: DEV_IOCTL_VERSION.0,
            ver_minor: DEV_IOCTL_VERSION.1,
            size: size as u32,
            ioctlfd,
            arg1,
            arg2: 0,
        };
        // SAFETY: `words` holds at least DEV_IOCTL_SIZE bytes, is 8-byte aligned (enough
        // for DevIoctl), and the path bytes are copied after the header within its length.
        unsafe {
            let base = words.as_mut_ptr().cast::<u8>();
            std::ptr::write(base.cast::<DevIoctl>(), header);
            std::ptr::copy_nonoverlapping(
                path_bytes.as_ptr(),
                base.add(DEV_IOCTL_SIZE),
                path_bytes.len(),
            );
        }
        Ok(Self { words })
    }

    fn as_mut_ptr(&mut self) -> *mut DevIoctl {
        self.words.as_mut_ptr().cast()
    }

    fn header(&self) -> DevIoctl {
        // SAFETY: the buffer starts with a DevIoctl written in `new` (and maybe updated by
        // the kernel).
        unsafe { std::ptr::read(self.words.as_ptr().cast::<DevIoctl>()) }
    }
}

/// The `/dev/autofs` control device, through which a new daemon takes over mounts whose
/// daemon died.
#[derive(Debug)]
pub struct Control {
    device: File,
}

impl Control {
    /// Opens `/dev/autofs`.
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            device: File::options().read(true).write(true).open("/dev/autofs")?,
        })
    }

    /// Opens the autofs mount at `path` whose superblock has device `dev` (as `st_dev`)
    /// for ioctls; the descriptor works for READY, FAIL and CATATONIC too.
    pub fn open_mount(&self, path: &Path, dev: u32) -> io::Result<OwnedFd> {
        let mut request = DevRequest::new(-1, dev, Some(path))?;
        // SAFETY: the request buffer is valid for the header and the path the size names.
        unsafe { requests::dev_open_mount(self.device.as_raw_fd(), request.as_mut_ptr()) }
            .map_err(io::Error::from)?;
        let fd = request.header().ioctlfd;
        if fd < 0 {
            return Err(io::Error::other("OPENMOUNT returned no descriptor"));
        }
        // SAFETY: the kernel just installed `fd` in our table for us; nothing else owns it.
        Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
    }

    /// Makes the mount open as `mount` catatonic (releasing its waiters).
    pub fn catatonic(&self, mount: BorrowedFd<'_>) -> io::Result<()> {
        let mut request = DevRequest::new(mount.as_raw_fd(), 0, None)?;
        // SAFETY: as in `open_mount`.
        unsafe { requests::dev_catatonic(self.device.as_raw_fd(), request.as_mut_ptr()) }
            .map(drop)
            .map_err(io::Error::from)
    }

    /// Gives the catatonic mount open as `mount` a new pipe (write end `pipe`) and makes
    /// the caller's process group its daemon. EBUSY: the mount is not catatonic (it has a
    /// live daemon).
    pub fn set_pipe(&self, mount: BorrowedFd<'_>, pipe: BorrowedFd<'_>) -> io::Result<()> {
        let mut request = DevRequest::new(mount.as_raw_fd(), pipe.as_raw_fd() as u32, None)?;
        // SAFETY: as in `open_mount`.
        unsafe { requests::dev_set_pipe(self.device.as_raw_fd(), request.as_mut_ptr()) }
            .map(drop)
            .map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind: i32, token: u32, dev: u32, name: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0u8; PACKET_SIZE];
        bytes[0..4].copy_from_slice(&PROTOCOL.to_ne_bytes());
        bytes[4..8].copy_from_slice(&kind.to_ne_bytes());
        bytes[8..12].copy_from_slice(&token.to_ne_bytes());
        bytes[12..16].copy_from_slice(&dev.to_ne_bytes());
        bytes[32..36].copy_from_slice(&4242u32.to_ne_bytes());
        bytes[40..44].copy_from_slice(&(name.len() as u32).to_ne_bytes());
        bytes[NAME_OFFSET..NAME_OFFSET + name.len()].copy_from_slice(name);
        bytes
    }

    #[test]
    fn packets_are_parsed() {
        let parsed = Packet::parse(&packet(3, 17, 0x2a, b"sft.cern.ch")).unwrap();
        assert_eq!(parsed.kind, PACKET_MISSING_INDIRECT);
        assert_eq!(parsed.token, 17);
        assert_eq!(parsed.dev, 0x2a);
        assert_eq!(parsed.pid, 4242);
        assert_eq!(parsed.name, b"sft.cern.ch");
        assert_eq!(Packet::parse(&[0u8; 10]), Err(PacketError::Short(10)));
        let mut bad = packet(3, 1, 1, b"x");
        bad[40..44].copy_from_slice(&999u32.to_ne_bytes());
        assert_eq!(Packet::parse(&bad), Err(PacketError::NameTooLong(999)));
        let mut other = packet(3, 1, 1, b"x");
        other[0..4].copy_from_slice(&4u32.to_ne_bytes());
        let err = Packet::parse(&other).unwrap_err();
        assert_eq!(err.to_string(), "autofs packet of protocol 4, expected 5");
    }

    #[test]
    fn devices_are_written_like_mountinfo() {
        assert_eq!(device_text(0x2a), "0:42");
        assert_eq!(device_text((8 << 8) | 1), "8:1");
        // minor 300 = 0x12c: low byte in bits 0..8, the rest from bit 20 on.
        assert_eq!(device_text(0x2c | (0x100 << 12)), "0:300");
    }

    #[test]
    fn mount_options_name_the_pipe_and_the_protocol() {
        assert_eq!(
            mount_options(7, 1234),
            "fd=7,pgrp=1234,minproto=5,maxproto=5,indirect"
        );
    }
}
