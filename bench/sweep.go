package main

import (
	"context"
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// series is one way of calling's calls per second at each batch size.
type series struct {
	name   string
	points []point
}

// point is the calls per second of n calls made one way.
type point struct {
	n           int
	callsPerSec float64
}

// sweep measures, for each batch size of the plan, the calls per second of
// n calls one by one, as one explicit batch, through automatic batching
// (n goroutines), and as one getProducts of n ids, interleaved round by
// round.
func sweep(ctx context.Context, e *env) ([]series, error) {
	sh, c, err := e.shopAndBatchClient(ctx)
	if err != nil {
		return nil, err
	}
	a, err := e.auto(ctx, e.srv)
	if err != nil {
		return nil, err
	}
	out := []series{{name: "one by one"}, {name: "explicit batch"}, {name: "automatic batching"}, {name: "getProducts (bulk)"}}
	for _, n := range e.plan.sweepSizes {
		ids := ids(n, 1)
		t, err := interleave(ctx, e.plan.sweepRounds, sequential(sh, ids), explicitBatch(c, ids), automatic(a, ids), bulk(sh, ids))
		if err != nil {
			return nil, fmt.Errorf("%d calls: %w", n, err)
		}
		for i := range out {
			out[i].points = append(out[i].points, point{n: n, callsPerSec: t[i].callsPerSec()})
		}
	}
	return out, nil
}

// sweepRows returns the sweep as table rows: a column per way of calling.
func sweepRows(ss []series) [][]string {
	head := []string{"calls"}
	for _, s := range ss {
		head = append(head, s.name+" calls/s")
	}
	rows := [][]string{head}
	for i, p := range ss[0].points {
		row := []string{thousands(int64(p.n))}
		for _, s := range ss {
			row = append(row, thousands(int64(s.points[i].callsPerSec)))
		}
		rows = append(rows, append(row, ""))
	}
	rows[0] = append(rows[0], "")
	return rows
}

// Colours and dashes of the chart's lines, one per series.
var (
	palette = []color.Color{
		color.RGBA{R: 0x99, G: 0x99, B: 0x99, A: 0xff},
		color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
		color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
		color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	}
	dashes = [][]vg.Length{nil, nil, nil, {vg.Points(4), vg.Points(3)}}
)

// writeChart renders the sweep as an SVG (or PNG, PDF: by the file's
// extension) line chart of calls per second against batch size, both axes
// logarithmic.
func writeChart(path, subtitle string, ss []series) error {
	p := plot.New()
	p.Title.Text = "getProduct calls/s by batch size, one client over loopback\n" + subtitle
	p.X.Label.Text = "calls per batch (goroutines for automatic batching)"
	p.Y.Label.Text = "calls/s"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = commaTicks{}, commaTicks{}
	p.Legend.Top, p.Legend.Left = true, true // top left: every line starts low
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(12), -vg.Points(6)
	p.Add(plotter.NewGrid())
	for i, s := range ss {
		xys := make(plotter.XYs, len(s.points))
		for j, pt := range s.points {
			xys[j] = plotter.XY{X: float64(pt.n), Y: pt.callsPerSec}
		}
		line, dots, err := plotter.NewLinePoints(xys)
		if err != nil {
			return err
		}
		c := palette[i%len(palette)]
		line.Color, line.Width, line.Dashes = c, vg.Points(1.5), dashes[i%len(dashes)]
		dots.Color, dots.Shape = c, draw.CircleGlyph{}
		p.Add(line, dots)
		p.Legend.Add(s.name, line, dots)
	}
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}

// commaTicks are logarithmic ticks labelled with thousands separators.
type commaTicks struct{}

// Ticks returns plot.LogTicks' ticks, relabelled 1,000 rather than 1000.
func (commaTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.LogTicks{Prec: -1}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = thousands(int64(ts[i].Value))
		}
	}
	return ts
}
