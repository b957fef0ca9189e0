//! A list that forgets, rather than drops, the items that own nothing.
//!
//! A call's index changes and its profiles' `Work`s are kept in such lists from one call to the
//! next ([`super::Spare`]). Nearly every item owns no heap memory by the time the list is
//! cleared, and running its drop glue looked at every field to free nothing (~67 instructions a
//! call for the changes, ~190 for the profiles). [`Forgetting::clear`] (and the list's drop)
//! drops in place only those that still own something, and forgets the others, read where they
//! stand (moving each out of the list was dearer: a `Work` or a `Change` is large to move).

use std::mem::ManuallyDrop;

/// An item a [`Forgetting`] list may forget.
pub(crate) trait HoldsNothing: Sized {
    /// Whether it owns no heap memory, so that forgetting it leaks nothing.
    fn holds_nothing(&self) -> bool;

    /// One that owns nothing: what [`Forgetting::clear`] leaves where it drops an item, just
    /// before the list is emptied (never read).
    fn placeholder() -> Self;
}

/// A list of `T`, each in a `ManuallyDrop`; see the module's note.
pub(crate) struct Forgetting<T: HoldsNothing>(Vec<ManuallyDrop<T>>);

impl<T: HoldsNothing> Default for Forgetting<T> {
    fn default() -> Self {
        Forgetting(Vec::new())
    }
}

impl<T: HoldsNothing> Forgetting<T> {
    pub(crate) fn push(&mut self, item: T) {
        self.0.push(ManuallyDrop::new(item));
    }

    /// Take item `i` out, shifting those after it.
    pub(crate) fn remove(&mut self, i: usize) -> T {
        ManuallyDrop::into_inner(self.0.remove(i))
    }

    /// Empty the list, dropping each item that owns heap memory; its buffer stays.
    pub(crate) fn clear(&mut self) {
        self.clear_after(|item| item.holds_nothing());
    }

    /// [`Forgetting::clear`], with `each` reading every item first, in order (each item is
    /// dropped right after `each` reads it, when it holds something): `each` also says
    /// whether the item holds nothing (as [`HoldsNothing::holds_nothing`] does), for a reader
    /// that already matched on the item's kind (the index commit: a second `match` on each
    /// change's kind cost an indirect branch, mispredicted ~2 times a W1 call).
    pub(crate) fn clear_after(&mut self, mut each: impl FnMut(&T) -> bool) {
        for item in &mut self.0 {
            if !each(item) {
                let item = std::mem::replace(item, ManuallyDrop::new(T::placeholder()));
                drop(ManuallyDrop::into_inner(item));
            }
        }
        // `ManuallyDrop`s: no drop glue runs.
        self.0.clear();
    }
}

impl<T: HoldsNothing> Drop for Forgetting<T> {
    // Inline: an empty list (`finish` puts its profiles back over an empty one) costs a test.
    #[inline]
    fn drop(&mut self) {
        if !self.0.is_empty() {
            self.clear();
        }
    }
}

impl<T: HoldsNothing> From<Vec<T>> for Forgetting<T> {
    fn from(items: Vec<T>) -> Self {
        Forgetting(items.into_iter().map(ManuallyDrop::new).collect())
    }
}

impl<T: HoldsNothing> std::ops::Deref for Forgetting<T> {
    type Target = [ManuallyDrop<T>];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<T: HoldsNothing> std::ops::DerefMut for Forgetting<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// Counts its drops; owns "memory" when `held`.
    struct Item {
        held: bool,
        drops: Rc<Cell<usize>>,
    }

    impl Drop for Item {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
        }
    }

    impl HoldsNothing for Item {
        fn holds_nothing(&self) -> bool {
            !self.held
        }
        fn placeholder() -> Self {
            Item {
                held: false,
                drops: Rc::new(Cell::new(0)),
            }
        }
    }

    /// Those that hold something are dropped (once each), the others forgotten, by `clear`
    /// and by the list's drop; `remove` gives the item back whole.
    #[test]
    fn drops_only_what_holds_something() {
        let drops = Rc::new(Cell::new(0));
        let item = |held| Item {
            held,
            drops: drops.clone(),
        };
        let mut list = Forgetting::default();
        for held in [true, false, true, false, false] {
            list.push(item(held));
        }
        let taken = list.remove(0);
        assert!(taken.held);
        assert_eq!(list.len(), 4);
        list.clear();
        assert!(list.is_empty());
        assert_eq!(drops.get(), 1);
        drop(taken);
        assert_eq!(drops.get(), 2);
        let list: Forgetting<Item> = vec![item(true), item(false), item(true)].into();
        drop(list);
        assert_eq!(drops.get(), 4);
    }
}
