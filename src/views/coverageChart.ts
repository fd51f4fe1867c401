import { Resvg } from '@resvg/resvg-js';
import * as echarts from 'echarts';
import type { Coverage } from '../engine/nightly/index.js';

/**
 * The coverage growth chart: echarts rendered server-side to SVG, then to PNG by resvg (no canvas, no
 * native download). A module of its own because echarts takes a third of a second to load: the CLI and
 * the bot load it only when they draw a chart.
 */
/** The chart of cumulative tests and records per release, as a PNG. */
export function coverageChartPng(c: Coverage, size: { width: number; height: number } = { width: 800, height: 400 }): Buffer {
  const chart = echarts.init(null, null, { renderer: 'svg', ssr: true, width: size.width, height: size.height });
  try {
    chart.setOption({
      animation: false,
      backgroundColor: '#ffffff',
      title: { text: 'Coverage growth per release', left: 'center', textStyle: { fontSize: 16 } },
      textStyle: { fontFamily: 'sans-serif' },
      legend: { bottom: 0, itemGap: 60, data: ['cumulative tests', 'cumulative data records'] },
      grid: { left: 70, right: 80, top: 50, bottom: 50 },
      xAxis: { type: 'category', data: c.rows.map((r) => (r.archived ? `${r.release} (archived)` : r.release)) },
      yAxis: [
        { type: 'value', name: 'tests', minInterval: 1 },
        { type: 'value', name: 'records', minInterval: 1, splitLine: { show: false } },
      ],
      series: [
        { name: 'cumulative data records', type: 'bar', yAxisIndex: 1, data: c.rows.map((r) => r.cumulativeRecords), itemStyle: { color: '#9ec5e8' } },
        { name: 'cumulative tests', type: 'line', yAxisIndex: 0, data: c.rows.map((r) => r.cumulativeTests), itemStyle: { color: '#1d4f91' }, lineStyle: { width: 3 }, label: { show: true, position: 'top', color: '#1d4f91', fontWeight: 'bold' } },
      ],
    });
    const svg = chart.renderToSVGString();
    return new Resvg(svg, { font: { loadSystemFonts: true }, fitTo: { mode: 'original' } }).render().asPng();
  } finally {
    chart.dispose();
  }
}
