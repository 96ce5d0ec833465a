//! Two channel ends over one region, driven by the input: sends and receives on both sides,
//! attaches again, and (hostile peer) words written anywhere in the region. Never a panic,
//! never an access outside the region (the region asserts), and while nothing scribbled every
//! message arrives whole and in order (checked against a model).
#![no_main]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use msgchan::{Channel, Shared};

const SIZE: usize = 0x400 + 2 * 512;

#[derive(Clone)]
struct Region(Rc<RefCell<Vec<u8>>>);

impl Shared for Region {
    fn size(&self) -> usize {
        self.0.borrow().len()
    }
    fn load(&self, off: usize) -> u32 {
        assert!(off % 4 == 0 && off + 4 <= SIZE);
        let m = self.0.borrow();
        u32::from_le_bytes(m[off..off + 4].try_into().unwrap())
    }
    fn store(&self, off: usize, value: u32) {
        assert!(off % 4 == 0 && off + 4 <= SIZE);
        self.0.borrow_mut()[off..off + 4].copy_from_slice(&value.to_le_bytes());
    }
    fn read(&self, off: usize, buf: &mut [u8]) {
        buf.copy_from_slice(&self.0.borrow()[off..off + buf.len()]);
    }
    fn write(&self, off: usize, data: &[u8]) {
        self.0.borrow_mut()[off..off + data.len()].copy_from_slice(data);
    }
    fn fence(&self) {}
}

fuzz_target!(|data: &[u8]| {
    let region = Region(Rc::new(RefCell::new(vec![0; SIZE])));
    let mut ends = [
        Channel::open(region.clone(), 0).unwrap(),
        Channel::open(region.clone(), 1).unwrap(),
    ];
    // What each side sent that the other has not read yet.
    let mut model: [VecDeque<Vec<u8>>; 2] = [VecDeque::new(), VecDeque::new()];
    let mut scribbled = false;
    let mut buf = [0u8; 256];
    let mut bytes = data.iter().copied();
    let mut counter = 0u8;
    while let Some(op) = bytes.next() {
        let side = usize::from(op & 1);
        match op >> 1 & 7 {
            0 | 1 | 2 => {
                let len = usize::from(bytes.next().unwrap_or(0)) % 140;
                counter = counter.wrapping_add(1);
                let m: Vec<u8> = (0..len).map(|i| counter.wrapping_add(i as u8)).collect();
                if let Ok(Some(_)) = ends[side].send(&m) {
                    model[side].push_back(m);
                }
            }
            3 | 4 | 5 => {
                let got = ends[side].recv(&mut buf);
                if !scribbled {
                    let want = model[1 - side].pop_front();
                    match (got, want) {
                        (Ok(Some(len)), Some(m)) => assert_eq!(&buf[..len], &m[..]),
                        (Ok(None), None) => {}
                        (got, want) => panic!("received {got:?}, expected {want:?}"),
                    }
                }
            }
            6 => {
                let off = usize::from(bytes.next().unwrap_or(0)) * 4 % SIZE;
                let v = u32::from_le_bytes([
                    bytes.next().unwrap_or(0),
                    bytes.next().unwrap_or(0),
                    bytes.next().unwrap_or(0),
                    bytes.next().unwrap_or(0),
                ]);
                region.store(off, v);
                scribbled = true;
            }
            _ => {
                // The side's VM starts again: what waited for it is gone.
                if let Ok(end) = Channel::open(region.clone(), side) {
                    ends[side] = end;
                    model[1 - side].clear();
                }
            }
        }
    }
});
