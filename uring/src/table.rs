//! The one table of operations in flight that every ring keeps: what each
//! operation owns, by slot number (its SQE's user_data, below
//! [`crate::LENT_MARK`]), from the moment it is queued until its own
//! completion takes it out.

/// Operations in flight by slot, each holding a `V`.
pub(crate) struct InFlightTable<V> {
    slots: Vec<Option<V>>,
    free: Vec<usize>,
    /// The most slots the table may have; it grows up to this as needed.
    capacity: usize,
}

impl<V> InFlightTable<V> {
    /// A table of at most `capacity` operations.
    pub fn with_capacity(capacity: usize) -> InFlightTable<V> {
        InFlightTable {
            slots: Vec::new(),
            free: Vec::new(),
            capacity,
        }
    }

    /// Operations in the table.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether another operation fits.
    pub fn has_room(&self) -> bool {
        !self.free.is_empty() || self.slots.len() < self.capacity
    }

    /// Puts `value` in a free slot and returns the slot, or gives it back
    /// when the table is full.
    pub fn insert(&mut self, value: V) -> Result<u64, V> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if self.slots.len() < self.capacity => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return Err(value),
        };
        self.slots[slot] = Some(value);
        Ok(slot as u64)
    }

    /// Takes out what `slot` holds (its operation completed, or never
    /// reached the kernel); `None` for a slot holding nothing.
    pub fn remove(&mut self, slot: u64) -> Option<V> {
        let at = usize::try_from(slot).ok()?;
        let value = self.slots.get_mut(at).and_then(Option::take)?;
        self.free.push(at);
        Some(value)
    }

    /// The slots holding an operation.
    pub fn busy(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_some())
            .map(|(slot, _)| slot as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_the_capacity_holds() {
        let mut table = InFlightTable::with_capacity(2);
        assert_eq!(table.insert("a"), Ok(0));
        assert_eq!(table.insert("b"), Ok(1));
        assert_eq!(table.insert("c"), Err("c"), "full");
        assert!(!table.has_room());
        assert_eq!(table.remove(0), Some("a"));
        assert_eq!(table.remove(0), None, "taken once");
        assert_eq!(table.remove(7), None, "never used");
        assert_eq!(table.busy().collect::<Vec<_>>(), vec![1]);
        assert_eq!(table.insert("c"), Ok(0), "the freed slot");
        assert_eq!(table.len(), 2);
    }
}
