// An array as heatmaps with one colour scale: a table with the numbers in its cells when small, a canvas when big.

const MAX_SIDE_WITH_NUMBERS = 12;
const CANVAS_WIDTH_PX = 320; // of a matrix; half that for each channel of a bigger array
// The viridis colour map (perceptually even, readable in grey and by most colour-blind people) at 0, 1/4, ... 1.
const VIRIDIS = [
  [68, 1, 84],
  [59, 82, 139],
  [33, 145, 140],
  [94, 201, 98],
  [253, 231, 37],
];

/** A short form of a number: integers as they are, others to 3 significant digits (9.74e-5 below 0.001). */
export function formatNumber(value) {
  if (Number.isInteger(value)) return String(value);
  const rounded = Number(value.toPrecision(3));
  return Math.abs(rounded) < 1e-3 ? rounded.toExponential() : String(rounded);
}

/** The shape of a nested list of numbers, from its first elements. */
const shapeOf = (array) => (Array.isArray(array) ? [array.length, ...shapeOf(array[0])] : []);

/**
 * A <figure> showing `array` under `title`, with a legend from its minimum to its maximum: a matrix (rows of
 * numbers) as one heatmap; C x H x W as one per channel ("channel 1"); O x C x kh x kw as a row of them per output
 * channel ("out 1, in 0"). All of them share the colour scale.
 */
export function heatmap(title, array) {
  const shape = shapeOf(array);
  let min = Infinity;
  let max = -Infinity;
  for (const value of array.flat(Infinity)) [min, max] = [Math.min(min, value), Math.max(max, value)];
  const position = (value) => (max > min ? (value - min) / (max - min) : 0.5);
  const range = `from ${formatNumber(min)} to ${formatNumber(max)}`;
  const figure = element("figure", "heatmap");
  figure.append(element("figcaption", "", `${title}, ${shape.join(" × ")}`));
  if (shape.length === 2) {
    figure.append(picture(array, position, CANVAS_WIDTH_PX, `${title}: ${shape.join(" × ")}, ${range}`, ""));
  } else {
    const rows = shape.length === 4 ? array : [array];
    rows.forEach((matrices, out) => {
      const row = element("div", "channels");
      matrices.forEach((matrix, c) => {
        const name = shape.length === 4 ? `out ${out}, in ${c}` : `channel ${c}`;
        const label = `${title}, ${name}: ${shape.slice(-2).join(" × ")}, ${range}`;
        const channel = element("figure", "channel");
        channel.append(element("figcaption", "", name), picture(matrix, position, CANVAS_WIDTH_PX / 2, label, name));
        row.append(channel);
      });
      figure.append(row);
    });
  }
  figure.append(legend(min, max));
  return figure;
}

/** One matrix: a table with numbers when small, else a canvas `width` pixels wide; its cells say `where` on hover. */
function picture(matrix, position, width, label, where) {
  const [rows, columns] = [matrix.length, matrix[0].length];
  const small = rows <= MAX_SIDE_WITH_NUMBERS && columns <= MAX_SIDE_WITH_NUMBERS;
  const drawn = small ? table(matrix, position, where) : canvas(matrix, position, width, where);
  drawn.setAttribute("aria-label", label);
  return drawn;
}

function table(matrix, position, where) {
  const body = element("tbody");
  matrix.forEach((values, r) => {
    const row = body.insertRow();
    values.forEach((value, c) => {
      const cell = row.insertCell();
      const rgb = colour(position(value));
      cell.textContent = formatNumber(value);
      cell.title = describe(where, r, c, value);
      cell.style.backgroundColor = `rgb(${rgb})`;
      cell.classList.toggle("on-dark", !darkTextReadable(rgb));
    });
  });
  const cells = element("table", "cells");
  cells.append(body);
  return cells;
}

function canvas(matrix, position, width, where) {
  const [rows, columns] = [matrix.length, matrix[0].length];
  const picture = element("canvas", "pixels");
  Object.assign(picture, { width: columns, height: rows });
  picture.setAttribute("role", "img");
  picture.style.width = `${columns * Math.max(1, Math.floor(width / columns))}px`; // whole pixels per cell
  const context = picture.getContext("2d");
  const image = context.createImageData(columns, rows);
  matrix.forEach((values, r) =>
    values.forEach((value, c) => image.data.set([...colour(position(value)), 255], 4 * (r * columns + c))),
  );
  context.putImageData(image, 0, 0);
  picture.addEventListener("mousemove", (event) => {
    const r = Math.min(rows - 1, Math.floor((event.offsetY / picture.clientHeight) * rows));
    const c = Math.min(columns - 1, Math.floor((event.offsetX / picture.clientWidth) * columns));
    picture.title = describe(where, r, c, matrix[r][c]);
  });
  return picture;
}

function legend(min, max) {
  const ramp = element("canvas", "ramp");
  Object.assign(ramp, { width: 64, height: 1 });
  ramp.setAttribute("aria-hidden", "true");
  const context = ramp.getContext("2d");
  for (let x = 0; x < ramp.width; x++) {
    context.fillStyle = `rgb(${colour(x / (ramp.width - 1))})`;
    context.fillRect(x, 0, 1, 1);
  }
  const scale = element("div", "legend");
  scale.append(element("span", "", `min ${formatNumber(min)}`), ramp, element("span", "", `max ${formatNumber(max)}`));
  return scale;
}

/** The colour of position t in [0, 1] on the map, as [r, g, b]. */
function colour(t) {
  const x = t * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
  return VIRIDIS[i].map((low, k) => Math.round(low + (VIRIDIS[i + 1][k] - low) * (x - i)));
}

/** Whether black text on this background has more contrast than white (WCAG relative luminance). */
function darkTextReadable(rgb) {
  const [r, g, b] = rgb.map((v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
  return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.179;
}

const describe = (where, r, c, value) => `${where ? `${where}, ` : ""}row ${r}, column ${c}: ${value}`;

function element(tag, className = "", text = "") {
  const made = document.createElement(tag);
  made.className = className;
  made.textContent = text;
  return made;
}
