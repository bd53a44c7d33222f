package main

import (
	"fmt"
	"os"
	"strings"
)

// yamlSet sets dotted keys (log.level=debug) in a YAML document made of
// nested block mappings (what the chart's config.yaml files are), keeping
// every other line and comment as it is. A key that is missing is added
// under its parent (the parents too). It refuses flow style and lists on
// the key's path rather than guess.
func yamlSet(doc string, sets []string) (string, error) {
	lines := strings.Split(strings.TrimRight(doc, "\n"), "\n")
	if doc == "" {
		lines = nil
	}
	for _, kv := range sets {
		key, val, ok := strings.Cut(kv, "=")
		if !ok {
			return "", fmt.Errorf("%q: want key.path=value", kv)
		}
		var err error
		if lines, err = setOne(lines, strings.Split(key, "."), val); err != nil {
			return "", fmt.Errorf("%s: %w", key, err)
		}
	}
	return strings.Join(lines, "\n") + "\n", nil
}

func indentOf(l string) int { return len(l) - len(strings.TrimLeft(l, " ")) }

func isContent(l string) bool {
	t := strings.TrimSpace(l)
	return t != "" && !strings.HasPrefix(t, "#") && t != "---"
}

// setOne walks the path from the top; lo..hi is the block of the current
// parent and ind the indentation of its children.
func setOne(lines []string, path []string, val string) ([]string, error) {
	lo, hi, ind := 0, len(lines), 0
	for depth, k := range path {
		found := -1
		for i := lo; i < hi; i++ {
			l := lines[i]
			if !isContent(l) || indentOf(l) != ind {
				continue
			}
			t := strings.TrimSpace(l)
			if strings.HasPrefix(t, "- ") {
				return nil, fmt.Errorf("a list on the path")
			}
			if name, _, ok := strings.Cut(t, ":"); ok && strings.Trim(name, `"'`) == k {
				found = i
				break
			}
		}
		last := depth == len(path)-1
		if found < 0 {
			// Add the rest of the path at the end of the parent's block.
			var add []string
			for j, rest := range path[depth:] {
				pad := strings.Repeat(" ", ind+2*j)
				if j == len(path[depth:])-1 {
					add = append(add, pad+rest+": "+val)
				} else {
					add = append(add, pad+rest+":")
				}
			}
			out := append(append(append([]string{}, lines[:hi]...), add...), lines[hi:]...)
			return out, nil
		}
		name, rest, _ := strings.Cut(strings.TrimSpace(lines[found]), ":")
		rest = strings.TrimSpace(rest)
		if last {
			if rest != "" && !strings.HasPrefix(rest, "#") && (strings.HasPrefix(rest, "{") || strings.HasPrefix(rest, "[")) {
				return nil, fmt.Errorf("flow style value %q", rest)
			}
			lines[found] = strings.Repeat(" ", ind) + name + ": " + val
			return lines, nil
		}
		if rest != "" && !strings.HasPrefix(rest, "#") {
			return nil, fmt.Errorf("%s is a scalar or flow value (%q), not a mapping", k, rest)
		}
		// The child block: the lines after it that are indented deeper.
		end := found + 1
		child := -1
		for end < hi {
			l := lines[end]
			if isContent(l) {
				if indentOf(l) <= ind {
					break
				}
				if child < 0 {
					child = indentOf(l)
				}
			}
			end++
		}
		if child < 0 {
			child = ind + 2
		}
		lo, hi, ind = found+1, end, child
	}
	return lines, nil
}

// runYAMLSet is `drillplay yamlset FILE key=value...`: the edited file on stdout.
func runYAMLSet(args []string) error {
	if len(args) < 1 {
		return fmt.Errorf("usage: drillplay yamlset FILE key.path=value [key.path=value]")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	out, err := yamlSet(string(b), args[1:])
	if err != nil {
		return err
	}
	_, err = os.Stdout.WriteString(out)
	return err
}
