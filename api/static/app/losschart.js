// The loss curve of a training, drawn with uPlot as the epochs stream in; linear or log scale.

import uPlot from "../vendor/uplot-1.6.32/uPlot.esm.js";
import { formatNumber } from "./heatmap.js";

const HEIGHT_PX = 260;

const MAX_DECADE_LABELS = 6;

// Tick labels: 1e-9 rather than uPlot's "0.000" (null: a tick without a label).
const tickLabel = (tick) =>
  tick === null ? "" : tick !== 0 && Math.abs(tick) < 1e-3 ? tick.toExponential(0) : formatNumber(tick);

/** Ticks of a log scale: powers of ten, a few decades apart when the losses span many. */
function decades(chart, axis, min, max) {
  const [low, high] = [Math.floor(Math.log10(min)), Math.ceil(Math.log10(max))];
  const step = Math.ceil((high - low) / MAX_DECADE_LABELS) || 1;
  return Array.from({ length: Math.floor((high - low) / step) + 1 }, (_, i) => 10 ** (high - i * step)).reverse();
}

/**
 * Keep the legend on the latest epoch and loss while the pointer is off the chart (uPlot's own shows "--"
 * until hovered); over it, the legend follows the pointer as usual.
 */
function legendOnLatest(chart) {
  const latest = chart.data[0].length - 1;
  if (chart.cursor.left < 0 && latest >= 0 && chart.legend.idx !== latest) chart.setLegend({ idx: latest }, false);
}

export class LossChart {
  /** Draw into `plot` (an element in the page) on a linear or `log` scale; its data-points and data-scale say what
   * is drawn. */
  constructor(plot, log = false) {
    this.plot = plot;
    this.epochs = [];
    this.losses = [];
    this.log = log;
    this.pending = false;
    this.create();
    new ResizeObserver(() => this.chart.setSize(this.size())).observe(plot);
  }

  add({ epoch, loss }) {
    this.epochs.push(epoch);
    this.losses.push(loss);
    if (!this.pending) {
      this.pending = true; // draw once per frame, however many epochs arrived since the last one
      requestAnimationFrame(() => {
        this.pending = false;
        this.chart.setData([this.epochs, this.losses]);
        this.plot.dataset.points = this.epochs.length;
      });
    }
  }

  setLogScale(log) {
    this.log = log;
    this.create(); // uPlot fixes a scale's distribution when the chart is made
  }

  create() {
    this.chart?.destroy();
    const options = {
      ...this.size(),
      scales: { x: { time: false }, y: { distr: this.log ? 3 : 1 } },
      axes: [
        { label: "epoch" },
        {
          label: this.log ? "loss (log scale)" : "loss",
          size: 64,
          values: (_, ticks) => ticks.map(tickLabel),
          ...(this.log && { splits: decades, filter: (_, ticks) => ticks }), // label every tick of decades()
        },
      ],
      series: [
        { label: "epoch", value: (_, epoch) => (epoch == null ? "--" : String(epoch)) }, // 5000, as the text says
        { label: "loss", stroke: "#3b528b", width: 2, value: (_, loss) => (loss == null ? "--" : formatNumber(loss)) },
      ],
      hooks: { setLegend: [legendOnLatest] },
    };
    this.chart = new uPlot(options, [this.epochs, this.losses], this.plot);
    legendOnLatest(this.chart);
    this.plot.dataset.points = this.epochs.length;
    this.plot.dataset.scale = this.chart.scales.y.distr === 3 ? "log" : "linear"; // as uPlot drew it
  }

  size() {
    return { width: Math.max(200, this.plot.clientWidth), height: HEIGHT_PX };
  }
}
