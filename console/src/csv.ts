// Codes from an uploaded CSV: the first column of each non-empty line; a first line reading "code" is a header.
export function codesFromCsv(text: string): string[] {
  const lines = text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== "");
  const codes = lines.map((line) => (line.split(",")[0] ?? "").trim().replace(/^"(.*)"$/, "$1"));
  return codes.length && codes[0]?.toLowerCase() === "code" ? codes.slice(1) : codes;
}
