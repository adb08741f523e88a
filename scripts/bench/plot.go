package main

import (
	"fmt"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plotClip is the largest ratio drawn at full length; the labels carry
// the exact figures, so one slow row does not flatten the others.
const plotClip = 4.0

// plot draws, for every filesystem row, scanlockfs's cost relative to
// the loopback and to native as horizontal bars. Throughput rows are
// inverted so that every bar reads the same way: 1 is free, 2 takes twice
// as long.
func (rp *report) plot(path string) error {
	var names []string
	var vsLoop, vsNative plotter.Values
	cost := func(r *row, baseline string) float64 {
		v := r.ratio(baseline)
		if r.higherBetter {
			v = 1 / v
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return math.NaN()
		}
		return v
	}
	for _, r := range rp.rows {
		if r.section != sectionFS || r.unit == "MiB" {
			continue // time and throughput only
		}
		l, n := cost(r, vLoopback), cost(r, vNative)
		if math.IsNaN(l) && math.IsNaN(n) {
			continue
		}
		names = append(names, fmt.Sprintf("%s %s  (%s / %s)", r.id, r.name, ratioCell(l), ratioCell(n)))
		vsLoop = append(vsLoop, clipRatio(l))
		vsNative = append(vsNative, clipRatio(n))
	}
	if len(names) == 0 {
		return fmt.Errorf("no ratios to plot")
	}
	// Top to bottom in report order.
	for i, j := 0, len(names)-1; i < j; i, j = i+1, j-1 {
		names[i], names[j] = names[j], names[i]
		vsLoop[i], vsLoop[j] = vsLoop[j], vsLoop[i]
		vsNative[i], vsNative[j] = vsNative[j], vsNative[i]
	}

	p := plot.New()
	p.Title.Text = "scanlockfs cost: time ÷ baseline time (1 = no cost)"
	p.X.Label.Text = fmt.Sprintf("upper bar: ÷ loopback, lower bar: ÷ native (clipped at %.0f; the labels give both exactly)", plotClip)
	p.X.Min = 0
	p.X.Max = plotClip
	w := vg.Points(7)
	b1, err := plotter.NewBarChart(vsLoop, w)
	if err != nil {
		return err
	}
	b1.Horizontal = true
	b1.Color = plotutil.Color(0)
	b1.Offset = w / 2
	b2, err := plotter.NewBarChart(vsNative, w)
	if err != nil {
		return err
	}
	b2.Horizontal = true
	b2.Color = plotutil.Color(1)
	b2.Offset = -w / 2
	one, err := plotter.NewLine(plotter.XYs{{X: 1, Y: -0.5}, {X: 1, Y: float64(len(names)) - 0.5}})
	if err != nil {
		return err
	}
	one.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
	p.Add(b1, b2, one, plotter.NewGrid())
	p.NominalY(names...)
	height := vg.Length(len(names))*vg.Points(22) + vg.Inch
	return p.Save(11*vg.Inch, height, path)
}

func clipRatio(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return math.Min(v, plotClip)
}
