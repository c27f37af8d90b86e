package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"gopkg.in/yaml.v3"
)

// parseYAML parses exactly one YAML document into a node tree and returns
// its root (nil for an empty document).
func parseYAML(data []byte) (root *yaml.Node, err error) {
	// The YAML parser is third-party code fed untrusted bytes: a panic in
	// it becomes an error here rather than a crash of the caller.
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, invalidf("", "YAML parser failed: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, invalidf("", "manifest is empty")
		}
		return nil, invalidf("", "%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, invalidf("", "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return nil, invalidf("", "line %d: a manifest is one YAML document, found another", next.Line)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, invalidf("", "manifest is empty")
	}
	return doc.Content[0], nil
}

// plain rejects what a manifest has no use for and a reader could be
// misled by: anchors, aliases and explicit tags.
func plain(n *yaml.Node, path string) error {
	switch {
	case n.Kind == yaml.AliasNode:
		return invalidf(path, "line %d: aliases are not allowed", n.Line)
	case n.Anchor != "":
		return invalidf(path, "line %d: anchors are not allowed", n.Line)
	case n.Style&yaml.TaggedStyle != 0:
		return invalidf(path, "line %d: tags are not allowed", n.Line)
	}
	return nil
}

func kindName(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a sequence"
	case n.ShortTag() == "!!null":
		return "null"
	case n.ShortTag() == "!!bool":
		return "a boolean"
	case n.ShortTag() == "!!int", n.ShortTag() == "!!float":
		return "a number"
	default:
		return "a string"
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// mapping calls field for each key of a mapping node, in document order.
// Keys must be plain strings, each at most once; field returns false for
// a key it does not know.
func mapping(n *yaml.Node, path string, field func(key string, v *yaml.Node, path string) (known bool, err error)) error {
	if err := plain(n, path); err != nil {
		return err
	}
	if n.Kind != yaml.MappingNode {
		return invalidf(path, "line %d: expected a mapping, got %s", n.Line, kindName(n))
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if err := plain(k, path); err != nil {
			return err
		}
		if k.Kind != yaml.ScalarNode {
			return invalidf(path, "line %d: keys must be strings, got %s", k.Line, kindName(k))
		}
		if k.ShortTag() == "!!merge" {
			return invalidf(path, "line %d: merge keys (<<) are not allowed", k.Line)
		}
		if line, dup := seen[k.Value]; dup {
			return invalidf(path, "line %d: field %s is already set on line %d", k.Line, quote(k.Value), line)
		}
		seen[k.Value] = k.Line
		sub := k.Value
		if path != "" {
			sub = path + "." + k.Value
		}
		known, err := field(k.Value, v, sub)
		if err != nil {
			return err
		}
		if !known {
			return invalidf(path, "line %d: unknown field %s", k.Line, quote(k.Value))
		}
	}
	return nil
}

// sequence calls item for each element of a sequence node; null is an
// empty sequence.
func sequence(n *yaml.Node, path string, item func(i int, v *yaml.Node, path string) error) error {
	if err := plain(n, path); err != nil {
		return err
	}
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return invalidf(path, "line %d: expected a sequence, got %s", n.Line, kindName(n))
	}
	for i, v := range n.Content {
		if err := item(i, v, fmt.Sprintf("%s[%d]", path, i)); err != nil {
			return err
		}
	}
	return nil
}

// str reads a scalar as text; null is the empty string. Numbers and
// dates are taken as written (version: 2 is "2").
func str(n *yaml.Node, path string) (string, error) {
	if err := plain(n, path); err != nil {
		return "", err
	}
	if n.Kind != yaml.ScalarNode {
		return "", invalidf(path, "line %d: expected a string, got %s", n.Line, kindName(n))
	}
	if isNull(n) {
		return "", nil
	}
	if n.ShortTag() == "!!bool" {
		return "", invalidf(path, "line %d: expected a string, got a boolean", n.Line)
	}
	return n.Value, nil
}

func boolean(n *yaml.Node, path string) (bool, error) {
	if err := plain(n, path); err != nil {
		return false, err
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		switch strings.ToLower(n.Value) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	}
	return false, invalidf(path, "line %d: expected true or false, got %s", n.Line, kindName(n))
}

func stringList(n *yaml.Node, path string) ([]string, error) {
	var out []string
	if n.Kind == yaml.SequenceNode && len(n.Content) > MaxActions {
		return nil, invalidf(path, "%d actions, at most %d", len(n.Content), MaxActions)
	}
	err := sequence(n, path, func(_ int, v *yaml.Node, path string) error {
		s, err := str(v, path)
		out = append(out, s)
		return err
	})
	return out, err
}

// manifestFromNode reads the fields of a manifest from the root node; it
// checks structure and types, normalize checks values.
func manifestFromNode(root *yaml.Node) (Manifest, error) {
	if isNull(root) && root.Style&yaml.TaggedStyle == 0 && root.Anchor == "" {
		return Manifest{}, invalidf("", "manifest is empty")
	}
	var m Manifest
	err := mapping(root, "", func(key string, v *yaml.Node, path string) (bool, error) {
		var err error
		switch key {
		case "service":
			m.Service, err = str(v, path)
		case "version":
			m.Version, err = str(v, path)
		case "auto_approve_l1":
			m.AutoApproveL1, err = boolean(v, path)
		case "provides":
			if v.Kind == yaml.SequenceNode && len(v.Content) > MaxProvides {
				return true, invalidf(path, "%d entries, at most %d", len(v.Content), MaxProvides)
			}
			err = sequence(v, path, func(_ int, v *yaml.Node, path string) error {
				p, err := providedFromNode(v, path)
				m.Provides = append(m.Provides, p)
				return err
			})
		case "consumes":
			if v.Kind == yaml.SequenceNode && len(v.Content) > MaxConsumes {
				return true, invalidf(path, "%d entries, at most %d", len(v.Content), MaxConsumes)
			}
			err = sequence(v, path, func(_ int, v *yaml.Node, path string) error {
				c, err := consumedFromNode(v, path)
				m.Consumes = append(m.Consumes, c)
				return err
			})
		default:
			return false, nil
		}
		return true, err
	})
	return m, err
}

func providedFromNode(n *yaml.Node, path string) (Provided, error) {
	var p Provided
	err := mapping(n, path, func(key string, v *yaml.Node, path string) (bool, error) {
		var err error
		switch key {
		case "resource":
			p.Resource, err = str(v, path)
		case "actions":
			p.Actions, err = stringList(v, path)
		default:
			return false, nil
		}
		return true, err
	})
	return p, err
}

func consumedFromNode(n *yaml.Node, path string) (Consumed, error) {
	var c Consumed
	err := mapping(n, path, func(key string, v *yaml.Node, path string) (bool, error) {
		var err error
		switch key {
		case "service":
			c.Service, err = str(v, path)
		case "resource":
			c.Resource, err = str(v, path)
		case "actions":
			c.Actions, err = stringList(v, path)
		default:
			return false, nil
		}
		return true, err
	})
	return c, err
}
