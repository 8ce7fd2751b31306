// A matrix as a heatmap with a colour scale: a table with the numbers in its cells when small, a canvas when big.

const MAX_SIDE_WITH_NUMBERS = 12;
const CANVAS_WIDTH_PX = 320;
// The viridis colour map (perceptually even, readable in grey and by most colour-blind people) at 0, 1/4, ... 1.
const VIRIDIS = [
  [68, 1, 84],
  [59, 82, 139],
  [33, 145, 140],
  [94, 201, 98],
  [253, 231, 37],
];

/** A short form of a number: integers as they are, others to 3 significant digits. */
export const formatNumber = (value) => (Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(3))));

/** A <figure> showing `matrix` (rows of numbers) under `title`, with a legend from its minimum to its maximum. */
export function heatmap(title, matrix) {
  const rows = matrix.length;
  const columns = matrix[0]?.length ?? 0;
  let min = Infinity;
  let max = -Infinity;
  for (const row of matrix) for (const value of row) [min, max] = [Math.min(min, value), Math.max(max, value)];
  const position = (value) => (max > min ? (value - min) / (max - min) : 0.5);
  const figure = element("figure", "heatmap");
  const caption = element("figcaption", "", `${title}, ${rows} × ${columns}`);
  const small = rows <= MAX_SIDE_WITH_NUMBERS && columns <= MAX_SIDE_WITH_NUMBERS;
  const picture = small ? table(matrix, position) : canvas(matrix, position);
  const range = `from ${formatNumber(min)} to ${formatNumber(max)}`;
  picture.setAttribute("aria-label", `${title}: ${rows} × ${columns}, ${range}`);
  figure.append(caption, picture, legend(min, max));
  return figure;
}

function table(matrix, position) {
  const body = element("tbody");
  matrix.forEach((values, r) => {
    const row = body.insertRow();
    values.forEach((value, c) => {
      const cell = row.insertCell();
      const rgb = colour(position(value));
      cell.textContent = formatNumber(value);
      cell.title = describe(r, c, value);
      cell.style.backgroundColor = `rgb(${rgb})`;
      cell.classList.toggle("on-dark", !darkTextReadable(rgb));
    });
  });
  const cells = element("table", "cells");
  cells.append(body);
  return cells;
}

function canvas(matrix, position) {
  const [rows, columns] = [matrix.length, matrix[0].length];
  const picture = element("canvas", "pixels");
  Object.assign(picture, { width: columns, height: rows });
  picture.setAttribute("role", "img");
  picture.style.width = `${columns * Math.max(1, Math.floor(CANVAS_WIDTH_PX / columns))}px`; // whole pixels per cell
  const context = picture.getContext("2d");
  const image = context.createImageData(columns, rows);
  matrix.forEach((values, r) =>
    values.forEach((value, c) => image.data.set([...colour(position(value)), 255], 4 * (r * columns + c))),
  );
  context.putImageData(image, 0, 0);
  picture.addEventListener("mousemove", (event) => {
    const r = Math.min(rows - 1, Math.floor((event.offsetY / picture.clientHeight) * rows));
    const c = Math.min(columns - 1, Math.floor((event.offsetX / picture.clientWidth) * columns));
    picture.title = describe(r, c, matrix[r][c]);
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

const describe = (r, c, value) => `row ${r}, column ${c}: ${value}`;

function element(tag, className = "", text = "") {
  const made = document.createElement(tag);
  made.className = className;
  made.textContent = text;
  return made;
}
