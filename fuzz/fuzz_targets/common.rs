//! Reading fuzzer bytes as message fields: every getter returns something (zeros once the
//! input is used up), so any byte string is a message.
#![allow(dead_code)] // each target uses some of the getters
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let b = self.take(N);
        a[..b.len()].copy_from_slice(b);
        a
    }
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    /// A u32 that is usually small (so the checks past the size checks are reached).
    pub fn small_u32(&mut self) -> u32 {
        match self.u8() {
            0..=199 => self.u8() as u32,
            200..=249 => self.u32() & 0xffff,
            _ => self.u32(),
        }
    }
    pub fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.array())
    }
    /// An f64 from a handful of interesting values or raw bits.
    pub fn f64(&mut self) -> f64 {
        match self.u8() % 8 {
            0 => 0.0,
            1 => 1.0,
            2 => -1.0,
            3 => f64::NAN,
            4 => f64::INFINITY,
            5 => 1e30,
            6 => self.u8() as f64 - 128.0,
            _ => f64::from_bits(u64::from_le_bytes(self.array())),
        }
    }
    pub fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
        from[self.u8() as usize % from.len()]
    }
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }
}
