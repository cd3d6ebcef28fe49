package runtime

import "testing"

func TestClusterPrefix(t *testing.T) {
	for cluster, want := range map[string]string{"": "/granary/dev/", "prod": "/granary/prod/"} {
		if got := ClusterPrefix(cluster); got != want {
			t.Errorf("ClusterPrefix(%q) = %q, want %q", cluster, got, want)
		}
	}
	c := Config{Cluster: "prod"}
	if got := c.prefix(); got != ClusterPrefix("prod") {
		t.Errorf("Config.prefix() = %q, want %q", got, ClusterPrefix("prod"))
	}
}
