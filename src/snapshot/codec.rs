//! The snapshot's byte encoding: a few primitives, little-endian and length-prefixed, that each
//! part of the state uses to write and read itself. No schema: the format's version number says
//! what follows, and any change to what a part writes bumps it ([`super::FORMAT`]).

use std::net::IpAddr;

use chrono::{DateTime, Utc};

/// Why bytes did not decode: a snapshot that ends early or holds a value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the snapshot's body is malformed: {0}")]
pub struct Malformed(pub &'static str);

/// Appends values to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity),
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }

    pub fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }

    pub fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub fn i32(&mut self, value: i32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// A length or count: LEB128, one byte below 128.
    pub fn len(&mut self, value: usize) {
        let mut value = value as u64;
        while value >= 0x80 {
            self.u8((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.u8(value as u8);
    }

    pub fn raw(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        self.len(bytes.len());
        self.raw(bytes);
    }

    pub fn str(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }

    pub fn uuid(&mut self, value: uuid::Uuid) {
        self.raw(value.as_bytes());
    }

    /// Exact to the nanosecond: seconds and nanoseconds since the epoch.
    pub fn time(&mut self, value: DateTime<Utc>) {
        self.i64(value.timestamp());
        self.u32(value.timestamp_subsec_nanos());
    }

    pub fn option<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            Some(value) => {
                self.u8(1);
                write(self, value);
            }
            None => self.u8(0),
        }
    }

    pub fn ip(&mut self, value: IpAddr) {
        match value {
            IpAddr::V4(v4) => {
                self.u8(4);
                self.raw(&v4.octets());
            }
            IpAddr::V6(v6) => {
                self.u8(6);
                self.raw(&v6.octets());
            }
        }
    }

    pub fn opt_ip(&mut self, value: Option<IpAddr>) {
        self.option(value, Self::ip);
    }

    pub fn opt_time(&mut self, value: Option<DateTime<Utc>>) {
        self.option(value, Self::time);
    }
}

/// Reads values back in the order they were written.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.bytes.len() < n {
            return Err(Malformed("it ends early"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.raw(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.array::<1>()?[0])
    }

    pub fn bool(&mut self) -> Result<bool, Malformed> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Malformed("a flag is neither 0 nor 1")),
        }
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32, Malformed> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, Malformed> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A length or count, checked against what is left (each item takes at least one byte),
    /// so a corrupt count cannot ask for a huge allocation.
    pub fn len(&mut self) -> Result<usize, Malformed> {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.u8()?;
            if shift >= 64 {
                return Err(Malformed("a length overflows"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let value = usize::try_from(value).map_err(|_| Malformed("a length overflows"))?;
        if value > self.bytes.len() {
            return Err(Malformed("a length runs past the end"));
        }
        Ok(value)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.len()?;
        self.raw(n)
    }

    pub fn str(&mut self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Malformed("a string is not UTF-8"))
    }

    pub fn uuid(&mut self) -> Result<uuid::Uuid, Malformed> {
        Ok(uuid::Uuid::from_bytes(self.array()?))
    }

    pub fn time(&mut self) -> Result<DateTime<Utc>, Malformed> {
        let seconds = self.i64()?;
        let nanos = self.u32()?;
        DateTime::from_timestamp(seconds, nanos).ok_or(Malformed("a time is out of range"))
    }

    pub fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, Malformed>,
    ) -> Result<Option<T>, Malformed> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            _ => Err(Malformed("an option's tag is neither 0 nor 1")),
        }
    }

    pub fn ip(&mut self) -> Result<IpAddr, Malformed> {
        match self.u8()? {
            4 => Ok(IpAddr::from(self.array::<4>()?)),
            6 => Ok(IpAddr::from(self.array::<16>()?)),
            _ => Err(Malformed("an address is neither IPv4 nor IPv6")),
        }
    }

    pub fn opt_ip(&mut self) -> Result<Option<IpAddr>, Malformed> {
        self.option(Self::ip)
    }

    pub fn opt_time(&mut self) -> Result<Option<DateTime<Utc>>, Malformed> {
        self.option(Self::time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_as_written_and_short_input_is_an_error() {
        let time = DateTime::from_timestamp(1_700_000_000, 123_456_789).expect("in range");
        let mut w = Writer::default();
        w.u32(7);
        w.i64(-3);
        w.str("héllo");
        w.opt_time(Some(time));
        w.opt_ip(Some("2001:db8::1".parse().expect("ip")));
        w.opt_ip(None);
        w.bool(true);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u32(), Ok(7));
        assert_eq!(r.i64(), Ok(-3));
        assert_eq!(r.str(), Ok("héllo"));
        assert_eq!(r.opt_time(), Ok(Some(time)));
        assert_eq!(r.opt_ip(), Ok(Some("2001:db8::1".parse().expect("ip"))));
        assert_eq!(r.opt_ip(), Ok(None));
        assert_eq!(r.bool(), Ok(true));
        assert!(r.is_empty());
        let mut short = Reader::new(&bytes[..bytes.len() - 3]);
        assert!(short.u32().is_ok() && short.i64().is_ok() && short.str().is_ok());
        assert!(short.opt_time().is_ok());
        assert!(short.opt_ip().is_err());
        // A huge count is refused before anything is allocated.
        let mut w = Writer::default();
        w.len(usize::MAX / 2);
        let bytes = w.into_bytes();
        assert!(Reader::new(&bytes).len().is_err());
    }
}
