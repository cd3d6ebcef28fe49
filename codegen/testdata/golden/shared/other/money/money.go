// Package money has the same name as ../../money, to exercise import
// aliasing.
package money

// Rate is an exchange rate.
type Rate struct {
	From, To string
	PerMille int32
}
