package runtime

// PublishedLoad returns the activation count s's membership view shows
// for the silo siloID (-1 if the view does not list it).
func PublishedLoad(s *Silo, siloID string) int64 {
	info, ok := s.view.Current().Get(siloID)
	if !ok {
		return -1
	}
	return info.Activations
}
