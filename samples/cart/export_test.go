package cart

// Test access to the stored form of a cart.

// StoredCart is a cart's state as stored.
type StoredCart = cartState

// ReadStored reads a cart's state from a storage provider; ok is false if
// nothing is stored.
var ReadStored = readStored

// ExpireReminder is the name of the cart's expire reminder.
const ExpireReminder = expireReminder
