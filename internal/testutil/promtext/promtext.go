// Package promtext reads the Prometheus text format of .locks/metrics
// for the tests, as Prometheus itself parses it. It is apart from
// testutil so that what imports testutil (the benchmark, another module)
// does not need the Prometheus modules.
package promtext

import (
	"bytes"
	"slices"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Parse parses b, or fails tb if it is not Prometheus text.
func Parse(tb testing.TB, b []byte) map[string]*dto.MetricFamily {
	tb.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		tb.Fatalf("metrics are not Prometheus text: %v\n%s", err, b)
	}
	return fams
}

// Value is the value of the counter or gauge name whose labels are
// exactly labels (name, value pairs, by name), or the sample count of a
// histogram; it fails tb if there is no such sample.
func Value(tb testing.TB, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	tb.Helper()
	f := fams[name]
	if f == nil {
		tb.Fatalf("no metric %s", name)
	}
	for _, m := range f.GetMetric() {
		var got []string
		for _, l := range m.GetLabel() {
			got = append(got, l.GetName(), l.GetValue())
		}
		if !slices.Equal(got, labels) {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount())
		}
		tb.Fatalf("%s is a %v", name, f.GetType())
	}
	tb.Fatalf("no sample %s%q", name, labels)
	return 0
}
